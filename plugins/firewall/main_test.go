package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/nftables"

	"github.com/ikto-mesh/ikto/plugins/firewall/internal/nstest"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

// TestBinary runs the built hook as the agent does, as a go-plugin
// subprocess, started inside a namespace of the test's own so that it
// filters there. Its table has a per-run name, so that even a hook that
// somehow ran in the host's namespace could not touch anyone's table.
func TestBinary(t *testing.T) {
	ns := nstest.New(t)
	bin := sdktest.Build(t)
	table := fmt.Sprintf("iktotest%08x", rand.Uint32())
	// A child process starts in the namespace of the thread that forks it.
	hook := sdktest.Launch(t, bin, sdktest.LaunchOptions{Within: ns.Do})

	if err := hook.Configure(t.Context(), sdktest.Node(`{"table": "`+table+`"}`)); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if err := hook.Apply(t.Context(), sdk.Diff(nil, sdktest.Peers(2))); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	set, err := conn.GetSetByName(&nftables.Table{Name: table, Family: nftables.TableFamilyINet}, "peer_endpoints_v4")
	if err != nil {
		t.Fatalf("the hook's set in the test namespace: %v", err)
	}
	els, err := conn.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, el := range els {
		got = append(got, fmt.Sprintf("%d.%d.%d.%d", el.Key[0], el.Key[1], el.Key[2], el.Key[3]))
	}
	slices.Sort(got)
	if want := []string{"198.18.0.1", "198.18.0.2"}; !slices.Equal(got, want) {
		t.Errorf("endpoints = %v, want %v", got, want)
	}

	if err := hook.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == table {
			t.Errorf("table inet %s still there after Stop", table)
		}
	}
}
