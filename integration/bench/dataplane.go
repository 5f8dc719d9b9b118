package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// DataPlaneConfig sizes the throughput scenario.
type DataPlaneConfig struct {
	Rounds  int           // each round measures every path once
	Seconds time.Duration // one iperf3 run
}

// The three paths between host a and host b.
const (
	pathUnderlay = "bare veth underlay"
	pathIkto     = "ikto mesh (embedded wireguard-go)"
	pathHand     = "hand-configured wireguard-go + wg"
)

// handPort is the hand-configured device's UDP port; ikto's keeps 51820.
const handPort = 51821

// dataPlane is the world of one throughput run.
type dataPlane struct {
	w       *world
	a, b    *harness.Host
	targets map[string]netip.AddrPort // path → iperf3 server on b
	poll    *devicePoller
}

// DataPlane measures iperf3 TCP throughput from host a to host b over three
// paths that coexist in the same two namespaces: the bare veth underlay,
// the ikto mesh (two ikto-agent processes), and a tunnel configured by hand
// with Debian's wireguard-go and wg, same MTU. Rounds interleave the paths,
// so a neighbour's load drifts over all three alike; ratios are per round.
func DataPlane(ctx context.Context, bins *Binaries, dc DataPlaneConfig, log *slog.Logger) (figs []Figure, err error) {
	for _, bin := range []string{"iperf3", "wireguard-go", "wg"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w: %s not in PATH (apt-get install iperf3 wireguard-go wireguard-tools)", harness.ErrMissingPrerequisite, bin)
		}
	}
	d := &dataPlane{targets: map[string]netip.AddrPort{}}
	if d.w, err = newWorld(harness.NetworkOptions{StaticNeighbours: true}); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, d.close()) }()
	if err := d.setUp(ctx, bins); err != nil {
		return nil, err
	}
	bps := map[string][]float64{}
	paths := []string{pathUnderlay, pathIkto, pathHand}
	for r := range dc.Rounds {
		for i := range paths {
			path := paths[(i+r)%len(paths)]
			v, err := d.iperf(ctx, path, dc.Seconds)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", r+1, path, err)
			}
			bps[path] = append(bps[path], v/1e9)
		}
		log.Info("throughput round", "round", r+1, "underlay_gbps", last(bps[pathUnderlay]), "ikto_gbps", last(bps[pathIkto]), "hand_gbps", last(bps[pathHand]))
	}
	for _, p := range paths {
		figs = append(figs, NewFigure("data plane", "iperf3 TCP, "+p, "Gbit/s", bps[p], nil))
	}
	ratio := func(x, y []float64) []float64 {
		out := make([]float64, len(x))
		for i := range x {
			out[i] = x[i] / y[i]
		}
		return out
	}
	return append(figs,
		NewFigure("data plane", "ikto / hand-configured wireguard-go", "ratio", ratio(bps[pathIkto], bps[pathHand]), AtLeast(StatMedian, 0.9)),
		NewFigure("data plane", "ikto / underlay", "ratio", ratio(bps[pathIkto], bps[pathUnderlay]), nil),
		NewFigure("data plane", "hand-configured wireguard-go / underlay", "ratio", ratio(bps[pathHand], bps[pathUnderlay]), nil),
	), nil
}

func last(xs []float64) float64 { return xs[len(xs)-1] }

func (d *dataPlane) close() error {
	var errs []error
	if d.poll != nil {
		errs = append(errs, d.poll.close())
	}
	if d.w != nil {
		errs = append(errs, d.w.close())
	}
	// wireguard-go removes its control socket on SIGTERM; a killed one
	// leaves it behind in the directory every run shares.
	for _, h := range []*harness.Host{d.a, d.b} {
		if h != nil {
			if err := os.Remove(uapiPath(handDevice(h))); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (d *dataPlane) setUp(ctx context.Context, bins *Binaries) (err error) {
	if d.a, err = d.w.net.AddHost("a"); err != nil {
		return err
	}
	if d.b, err = d.w.net.AddHost("b"); err != nil {
		return err
	}
	if d.poll, err = newDevicePoller(); err != nil {
		return err
	}
	if err := d.startIkto(ctx, bins); err != nil {
		return err
	}
	_, handB, err := d.startHand(ctx)
	if err != nil {
		return err
	}
	d.targets[pathUnderlay] = netip.AddrPortFrom(d.b.Addr, 5201)
	d.targets[pathIkto] = netip.AddrPortFrom(d.b.PrivateAddress, 5202)
	d.targets[pathHand] = netip.AddrPortFrom(handB, 5203)
	for path, t := range d.targets {
		if _, err := d.b.Start("iperf3-"+strconv.Itoa(int(t.Port())), "iperf3", "-s", "-B", t.Addr().String(), "-p", strconv.Itoa(int(t.Port()))); err != nil {
			return err
		}
		// Connecting also completes the WireGuard handshakes before timing.
		err := testkit.Poll(ctx, 30*time.Second, func(ctx context.Context) error { return d.a.DialTCP(ctx, t) })
		if err != nil {
			return fmt.Errorf("iperf3 server for %s at %s: %w", path, t, err)
		}
	}
	return nil
}

// startIkto runs an agent on a and b and waits until each device lists the
// other.
func (d *dataPlane) startIkto(ctx context.Context, bins *Binaries) error {
	if _, err := d.w.bucket(ctx, "dataplane"); err != nil {
		return err
	}
	hosts := []*harness.Host{d.a, d.b}
	var agents []*harness.Agent
	for _, h := range hosts {
		a, err := h.StartAgent(bins.Binaries, h.Config(d.w.nats.URL(), "dataplane"))
		if err != nil {
			return err
		}
		agents = append(agents, a)
	}
	_, err := d.poll.waitUntil(ctx, hosts, launchPoll, meshTimeout, func(h *harness.Host, v map[string]harness.PeerView) bool {
		return listsExactly(expected(h, hosts))(h, v)
	}, exited(agents...))
	return err
}

// handDevice names the hand-made device after the host's: ik<suffix>w<n>
// is the harness's, ik<suffix>g<n> is ours.
func handDevice(h *harness.Host) string {
	i := strings.LastIndex(h.DevName, "w")
	return h.DevName[:i] + "g" + h.DevName[i+1:]
}

func uapiPath(dev string) string { return "/var/run/wireguard/" + dev + ".sock" }

// startHand runs Debian's wireguard-go on a and b and configures the pair by
// hand with wg and ip, in a ULA /64 outside the run's mesh.
func (d *dataPlane) startHand(ctx context.Context) (addrA, addrB netip.Addr, err error) {
	base := netip.MustParsePrefix("fd00:0:0:1::/64")
	if d.w.net.Mesh.Overlaps(base) {
		base = netip.MustParsePrefix("fd01:0:0:1::/64")
	}
	addrA = base.Addr().Next()
	addrB = addrA.Next()
	keys := make([]wgtypes.Key, 2)
	for i, h := range []*harness.Host{d.a, d.b} {
		if keys[i], err = wgtypes.GeneratePrivateKey(); err != nil {
			return addrA, addrB, err
		}
		if err := os.WriteFile(filepath.Join(h.Dir, "hand.key"), []byte(keys[i].String()+"\n"), 0o600); err != nil {
			return addrA, addrB, fmt.Errorf("hand key: %w", err)
		}
		if _, err := h.Start("wireguard-go", "wireguard-go", "-f", handDevice(h)); err != nil {
			return addrA, addrB, err
		}
		dev := handDevice(h)
		if err := testkit.Poll(ctx, 10*time.Second, func(context.Context) error { _, err := os.Stat(uapiPath(dev)); return err }); err != nil {
			return addrA, addrB, fmt.Errorf("wireguard-go on %s: %w", h.Name, err)
		}
	}
	pair := []struct {
		h          *harness.Host
		self, peer netip.Addr
		peerKey    wgtypes.Key
		peerUnder  netip.Addr
	}{
		{d.a, addrA, addrB, keys[1].PublicKey(), d.b.Addr},
		{d.b, addrB, addrA, keys[0].PublicKey(), d.a.Addr},
	}
	for _, p := range pair {
		dev := handDevice(p.h)
		steps := [][]string{
			{"wg", "set", dev, "private-key", filepath.Join(p.h.Dir, "hand.key"), "listen-port", strconv.Itoa(handPort),
				"peer", p.peerKey.String(), "endpoint", netip.AddrPortFrom(p.peerUnder, handPort).String(),
				"allowed-ips", netip.PrefixFrom(p.peer, 128).String()},
			{"ip", "addr", "add", netip.PrefixFrom(p.self, 64).String(), "dev", dev},
			{"ip", "link", "set", dev, "mtu", "1420", "up"},
		}
		for _, s := range steps {
			if _, err := p.h.Exec(ctx, s[0], s[1:]...); err != nil {
				return addrA, addrB, err
			}
		}
	}
	return addrA, addrB, nil
}

// iperf3Result is the part of iperf3 -J that carries the figure.
type iperf3Result struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperf runs one iperf3 TCP test from a to path's server and returns the
// receiver's bits per second.
func (d *dataPlane) iperf(ctx context.Context, path string, dur time.Duration) (float64, error) {
	t := d.targets[path]
	ctx, cancel := context.WithTimeout(ctx, dur+30*time.Second)
	defer cancel()
	secs := strconv.Itoa(max(1, int(dur.Seconds())))
	out, err := d.a.Exec(ctx, "iperf3", "-c", t.Addr().String(), "-p", strconv.Itoa(int(t.Port())), "-t", secs, "-J")
	var res iperf3Result
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		return 0, errors.Join(err, fmt.Errorf("iperf3 output: %w", jerr))
	}
	if res.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", res.Error)
	}
	if err != nil {
		return 0, err
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3 reported no throughput")
	}
	return res.End.SumReceived.BitsPerSecond, nil
}
