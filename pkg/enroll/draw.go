package enroll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/ikto-mesh/ikto/pkg/ipam"
)

// MaxDraws bounds the search for a free prefix: a mesh so full that this
// many uniform draws all hit claimed prefixes has no room worth drawing in.
const MaxDraws = 16

// ErrMeshFull ends the search when every draw was already claimed.
var ErrMeshFull = errors.New("mesh looks full")

// DrawFree draws prefixes of bits inside mesh until claimed reports one
// free (bucket.Claimed, in practice). Unlike ikto-init, which may print an
// unchecked draw, an enrollment fails when it cannot ask: the host's
// credentials will name this prefix and no other.
func DrawFree(ctx context.Context, mesh netip.Prefix, bits int, rnd io.Reader, claimed func(context.Context, netip.Prefix) (bool, error)) (netip.Prefix, error) {
	for range MaxDraws {
		p, err := ipam.RandomPrefix(mesh, bits, rnd)
		if err != nil {
			return netip.Prefix{}, err
		}
		taken, err := claimed(ctx, p)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("look up %s: %w", p, err)
		}
		if !taken {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("%w: %d random /%d prefixes in %s were all claimed", ErrMeshFull, MaxDraws, bits, mesh)
}
