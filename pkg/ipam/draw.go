package ipam

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// MaxDraws bounds the search for a free prefix: a mesh so full that this
// many uniform draws all hit claimed prefixes has no room worth drawing in.
const MaxDraws = 16

// ErrMeshFull ends the search when every draw was already claimed.
var ErrMeshFull = errors.New("mesh looks full")

// DrawFree draws prefixes of bits inside mesh until claimed reports one
// free (the bucket's Claimed, in practice). When claimed fails, the error
// comes with the draw it was checking: ikto-init may still print it as an
// unchecked hint, while an enrollment fails (the host's credentials will
// name this prefix and no other).
func DrawFree(ctx context.Context, mesh netip.Prefix, bits int, rnd io.Reader, claimed func(context.Context, netip.Prefix) (bool, error)) (netip.Prefix, error) {
	for range MaxDraws {
		p, err := RandomPrefix(mesh, bits, rnd)
		if err != nil {
			return netip.Prefix{}, err
		}
		taken, err := claimed(ctx, p)
		if err != nil {
			return p, fmt.Errorf("look up %s: %w", p, err)
		}
		if !taken {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("%w: %d random /%d prefixes in %s were all claimed", ErrMeshFull, MaxDraws, bits, mesh)
}
