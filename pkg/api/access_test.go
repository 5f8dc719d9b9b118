package api

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// With a group, the socket is the group's, mode 0660, and a directory Listen
// makes for it is the group's too, so that its members can reach it.
func TestListenGrantsTheGroup(t *testing.T) {
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "ikto.sock")
	l, err := Listen(path, g)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for p, mode := range map[string]os.FileMode{path: 0o660, dir: 0o750} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode || strconv.Itoa(int(st.Sys().(*syscall.Stat_t).Gid)) != g.Gid {
			t.Errorf("%s: mode %04o, gid %d; want %04o, group %s (%s)", p, st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Gid, mode, g.Name, g.Gid)
		}
	}
}

func TestSocketGroup(t *testing.T) {
	own, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	const missing = "ikto-no-such-group"
	for _, tc := range []struct {
		name     string
		optional bool
		want     string // the gid, "" for none
		wantErr  string
	}{
		{name: "", want: ""},
		{name: own.Name, want: own.Gid},
		{name: own.Gid, want: own.Gid},
		{name: missing, optional: true, want: ""},
		{name: missing, wantErr: "groupadd --system " + missing},
	} {
		g, err := SocketGroup(tc.name, tc.optional)
		got := ""
		if g != nil {
			got = g.Gid
		}
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("SocketGroup(%q, %v) = %v, %v; want an error saying %q", tc.name, tc.optional, g, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("SocketGroup(%q, %v) = gid %q, %v; want gid %q", tc.name, tc.optional, got, err, tc.want)
		}
	}
}

// The socket may be open to a group that may only read: a route that is
// not a GET does not start.
func TestServeRefusesWrites(t *testing.T) {
	l, err := Listen(filepath.Join(t.TempDir(), "ikto.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = Serve(context.Background(), l, Routes{"POST /v1/evict": JSON(func() string { return "" })})
	if err == nil || !strings.Contains(err.Error(), "POST /v1/evict") {
		t.Fatalf("Serve with a POST route = %v; want it refused, naming the route", err)
	}
}
