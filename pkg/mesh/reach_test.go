package mesh

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
)

func TestReach(t *testing.T) {
	a, b, c := wgtest.PublicKey(t), wgtest.PublicKey(t), wgtest.PublicKey(t)
	t0 := time.Now()
	peer := func(k wgtypes.Key, rx, tx int64) wgtypes.Peer {
		return wgtypes.Peer{PublicKey: k, ReceiveBytes: rx, TransmitBytes: tx}
	}
	var r Reach
	steps := []struct {
		at    time.Duration
		peers []wgtypes.Peer
		want  []string
	}{
		// a talks both ways, b is sent to and never answers, c is idle.
		{0, []wgtypes.Peer{peer(a, 100, 100), peer(b, 0, 100), peer(c, 5, 5)}, nil},
		{10 * time.Second, []wgtypes.Peer{peer(a, 200, 200), peer(b, 0, 200), peer(c, 5, 5)}, nil},
		{20 * time.Second, []wgtypes.Peer{peer(a, 300, 300), peer(b, 0, 300), peer(c, 5, 5)}, []string{b.String()}},
		// b answers again; c is still idle, not unreachable.
		{30 * time.Second, []wgtypes.Peer{peer(a, 400, 400), peer(b, 50, 400), peer(c, 5, 5)}, nil},
		// Nothing sent to b any more: silence alone is not a cut path.
		{50 * time.Second, []wgtypes.Peer{peer(a, 500, 500), peer(b, 50, 400), peer(c, 5, 5)}, nil},
	}
	for _, s := range steps {
		got := r.Unreachable(s.peers, t0.Add(s.at))
		if d := cmp.Diff(s.want, got); d != "" {
			t.Errorf("at %s (-want +got):\n%s", s.at, d)
		}
	}
}
