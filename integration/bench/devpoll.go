package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/ikto-mesh/ikto/integration/harness"
)

// devicePoller reads userspace WireGuard devices through their UAPI sockets
// with one long-lived wgctrl client. Every read is answered by the agent
// process that owns the device, so reads cost the agents a little CPU: the
// poll interval is a trade between resolution and disturbance.
type devicePoller struct {
	c *wgctrl.Client
}

func newDevicePoller() (*devicePoller, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wgctrl: %w", err)
	}
	return &devicePoller{c: c}, nil
}

func (d *devicePoller) close() error { return d.c.Close() }

// view reads dev's peers as public key → (allowed ips, endpoint), the form
// harness.Host.ExpectedView uses. A device that is not there yet reads as
// an error.
func (d *devicePoller) view(dev string) (map[string]harness.PeerView, error) {
	wd, err := d.c.Device(dev)
	if err != nil {
		return nil, err
	}
	got := make(map[string]harness.PeerView, len(wd.Peers))
	for _, p := range wd.Peers {
		ips := make([]string, 0, len(p.AllowedIPs))
		for _, n := range p.AllowedIPs {
			ips = append(ips, n.String())
		}
		slices.Sort(ips)
		v := harness.PeerView{AllowedIPs: strings.Join(ips, ",")}
		if p.Endpoint != nil {
			v.Endpoint = p.Endpoint.String()
		}
		got[p.PublicKey.String()] = v
	}
	return got, nil
}

// expected is what h's device must list: every other host of mesh.
func expected(h *harness.Host, mesh []*harness.Host) map[string]harness.PeerView {
	want := map[string]harness.PeerView{}
	for _, o := range mesh {
		if o != h {
			want[o.PublicKey.String()] = o.ExpectedView()
		}
	}
	return want
}

// waitUntil polls each host's device every interval, each in its own
// goroutine (so one slow read does not delay the others' timestamps), until
// cond holds for it, and returns when it first held, per host. failed, when
// it returns an error, ends the wait (an agent that exited).
func (d *devicePoller) waitUntil(ctx context.Context, hosts []*harness.Host, interval, timeout time.Duration,
	cond func(h *harness.Host, view map[string]harness.PeerView) bool, failed func() error) (map[*harness.Host]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	at := make([]time.Time, len(hosts))
	g, gctx := errgroup.WithContext(ctx)
	for i, h := range hosts {
		g.Go(func() error {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				if v, err := d.view(h.DevName); err == nil && cond(h, v) {
					at[i] = time.Now()
					return nil
				}
				if err := failed(); err != nil {
					return err
				}
				select {
				case <-gctx.Done():
					return fmt.Errorf("device %s of %s: not there after %s", h.DevName, h.Name, timeout)
				case <-tick.C:
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	done := make(map[*harness.Host]time.Time, len(hosts))
	for i, h := range hosts {
		done[h] = at[i]
	}
	return done, nil
}

// listsExactly is the condition "the device lists exactly want".
func listsExactly(want map[string]harness.PeerView) func(*harness.Host, map[string]harness.PeerView) bool {
	return func(_ *harness.Host, got map[string]harness.PeerView) bool { return maps.Equal(want, got) }
}
