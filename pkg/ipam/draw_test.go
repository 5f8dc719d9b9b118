package ipam

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"testing"
)

func TestDrawFree(t *testing.T) {
	mesh := netip.MustParsePrefix("10.0.0.0/30")
	claimed := map[netip.Prefix]bool{netip.MustParsePrefix("10.0.0.0/31"): true}
	lookup := func(_ context.Context, p netip.Prefix) (bool, error) { return claimed[p], nil }
	for range 20 {
		p, err := DrawFree(context.Background(), mesh, 31, nil, lookup)
		if err != nil || p != netip.MustParsePrefix("10.0.0.2/31") {
			t.Fatalf("DrawFree = %s, %v; want the one free /31", p, err)
		}
	}
	claimed[netip.MustParsePrefix("10.0.0.2/31")] = true
	if _, err := DrawFree(context.Background(), mesh, 31, nil, lookup); !errors.Is(err, ErrMeshFull) {
		t.Errorf("DrawFree of a full mesh = %v, want ErrMeshFull", err)
	}
	failing := func(context.Context, netip.Prefix) (bool, error) { return false, io.ErrUnexpectedEOF }
	if p, err := DrawFree(context.Background(), mesh, 31, nil, failing); !errors.Is(err, io.ErrUnexpectedEOF) || !mesh.Contains(p.Addr()) {
		t.Errorf("DrawFree with a failing look-up = %s, %v; want its error and the draw it was checking", p, err)
	}
}
