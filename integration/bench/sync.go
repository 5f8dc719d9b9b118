package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/integration/bench/agentstats"
	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// SyncVariant is one way an agent joins: its device and the bucket's size.
type SyncVariant struct {
	Device  string // "fake" (in memory) or "userspace"
	Records int    // records already in the bucket: the peers it must configure
	Runs    int
	// Signed: the records are signed (each verified on the way in), as
	// agents write them; else unsigned, as ikto 0.3.0's.
	Signed bool
	// Targets, in ms and MB; 0 means none.
	TargetSyncMs, TargetPeakRSSMB float64
}

// syncTimeout bounds one agent's join; 10,000 userspace peers take seconds.
const syncTimeout = 3 * time.Minute

// InitialSync measures one agent joining a bucket that already holds
// Records claims, until its device carries all of them: the time from
// agent.Run to that moment, the agent's peak RSS and its live Go heap. Each
// run is a fresh ikto-bench-agent process in a network namespace (the
// userspace device makes a real TUN interface there) with a new identity,
// whose record is deleted afterwards so the next run finds the same bucket.
func InitialSync(ctx context.Context, bins *Binaries, variants []SyncVariant, log *slog.Logger) (figs []Figure, err error) {
	w, err := newWorld(harness.NetworkOptions{})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, w.close()) }()
	host, fleet, err := w.joiner("sync")
	if err != nil {
		return nil, err
	}
	buckets := map[string]jetstream.KeyValue{}
	medians := map[string]float64{}
	for _, v := range variants {
		name := "sync-" + strconv.Itoa(v.Records)
		if v.Signed {
			name += "-signed"
		}
		kv, ok := buckets[name]
		if !ok {
			if kv, err = fillBucket(ctx, w, fleet, name, v.Records, v.Signed); err != nil {
				return nil, err
			}
			buckets[name] = kv
		}
		var stats []agentstats.Stats
		for run := range v.Runs {
			st, err := joinOnce(ctx, bins, host, fleet, w.nats.URL(), kv, v, run)
			if err != nil {
				return nil, fmt.Errorf("%s device, %d records, run %d: %w", v.Device, v.Records, run+1, err)
			}
			stats = append(stats, st)
		}
		log.Info("initial sync measured", "device", v.Device, "records", v.Records, "signed", v.Signed, "runs", v.Runs)
		vf := syncFigures(v, stats)
		figs = append(figs, vf...)
		medians[fmt.Sprint(v.Device, v.Records, v.Signed)] = vf[0].Median
		unsigned, signed := medians[fmt.Sprint(v.Device, v.Records, false)], medians[fmt.Sprint(v.Device, v.Records, true)]
		if v.Signed && unsigned > 0 {
			figs = append(figs, NewFigure("initial sync", fmt.Sprintf("signed / unsigned records, median join time, %s peers, %s device", thousands(v.Records), v.Device),
				"×", []float64{signed / unsigned}, AtMost(StatMedian, 1.2)))
		}
	}
	figs = append(figs, verificationFigures()...)
	largest := 0
	for _, v := range variants {
		largest = max(largest, v.Records)
	}
	restore, err := RestoreFigures(largest, 5)
	return append(figs, restore...), err
}

// verificationFigures are the cost of the per-record rules on one record,
// unsigned and signed (the signature verified): what a snapshot pays per
// record before anything else.
func verificationFigures() []Figure {
	rules := peer.Rules{Mesh: netip.MustParsePrefix("fd10::/16"), Bits: 48, Bucket: "ikto-bench"}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return nil
	}
	r := peer.Record{Name: "bench", PublicKey: k.PublicKey().String(), AdvertiseAddress: "198.18.0.9", AllowedIP: "fd10:1::/48", WGPort: 51820}
	unsigned := r.Encode()
	r.Seq = 1
	if err := rules.SignRecord(&r, k); err != nil {
		return nil
	}
	signed := r.Encode()
	key := peer.Key(netip.MustParsePrefix(r.AllowedIP))
	per := func(v []byte) []float64 {
		var out []float64
		for range 5 {
			res := testing.Benchmark(func(b *testing.B) {
				for b.Loop() {
					if _, rej := rules.Check(key, v, 1); rej != nil {
						b.Fatal(rej)
					}
				}
			})
			out = append(out, float64(res.NsPerOp())/1000)
		}
		return out
	}
	return []Figure{
		NewFigure("signatures", "per-record rules, unsigned record", "µs", per(unsigned), nil),
		NewFigure("signatures", "per-record rules, signed record (XEdDSA verified)", "µs", per(signed), nil),
	}
}

// joiner adds the host named name that joins a filled bucket, and the fleet
// (of the world's mesh) whose claims fill it.
func (w *world) joiner(name string) (*harness.Host, *Fleet, error) {
	h, err := w.net.AddHost(name)
	if err != nil {
		return nil, nil, err
	}
	fleet, err := NewFleet(w.net.Mesh, config.DefaultSubnetPrefix)
	if err != nil {
		return nil, nil, err
	}
	return h, fleet, nil
}

// fillBucket makes the bucket name and puts n claims in it, signed or not.
func fillBucket(ctx context.Context, w *world, fleet *Fleet, name string, n int, signed bool) (jetstream.KeyValue, error) {
	kv, err := w.bucket(ctx, name)
	if err != nil {
		return nil, err
	}
	recs, err := fleet.Records(n)
	if signed {
		recs, err = fleet.SignedRecords(n, name)
	}
	if err != nil {
		return nil, err
	}
	if err := PutRecords(ctx, w.js, name, recs); err != nil {
		return nil, err
	}
	return kv, nil
}

// joinOnce runs one agent process until it has synced and reads its report.
func joinOnce(ctx context.Context, bins *Binaries, host *harness.Host, fleet *Fleet, url string, kv jetstream.KeyValue, v SyncVariant, run int) (agentstats.Stats, error) {
	idx := fleet.Next()
	cfg, err := fleet.AgentConfig(host.Dir, idx, url, kv.Bucket(), "")
	if err != nil {
		return agentstats.Stats{}, err
	}
	cfg.WGDevName = host.DevName
	path, err := host.WriteConfig(*cfg)
	if err != nil {
		return agentstats.Stats{}, err
	}
	name := fmt.Sprintf("bench-agent-%s-%d-%d", v.Device, v.Records, run)
	p, err := host.Start(name, bins.BenchAgent, "-c", path, "-device", v.Device,
		"-expect", strconv.Itoa(v.Records), "-timeout", syncTimeout.String())
	if err != nil {
		return agentstats.Stats{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, syncTimeout+30*time.Second)
	defer cancel()
	code, err := p.Wait(wctx)
	if err != nil {
		return agentstats.Stats{}, errors.Join(err, p.Stop(closeGrace))
	}
	if code != 0 {
		return agentstats.Stats{}, fmt.Errorf("%s exited with %d:\n%s", name, code, p.LogTail(20))
	}
	st, err := parseStats(p.LogPath)
	if err != nil {
		return agentstats.Stats{}, err
	}
	// Take the joiner's claim out again, so every run finds the same bucket.
	if err := kv.Delete(ctx, peer.Key(fleet.Prefix(idx))); err != nil {
		return agentstats.Stats{}, fmt.Errorf("delete the claim of %s: %w", name, err)
	}
	return st, nil
}

// parseStats reads the JSON line an ikto-bench-agent printed into its log
// (stdout and stderr share it; the report is the last line that is JSON).
func parseStats(logPath string) (agentstats.Stats, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return agentstats.Stats{}, fmt.Errorf("agent report: %w", err)
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "{") {
			last = line
		}
	}
	var st agentstats.Stats
	if err := json.Unmarshal([]byte(last), &st); err != nil {
		return st, fmt.Errorf("agent report in %s: %w", filepath.Base(logPath), err)
	}
	return st, nil
}

func syncFigures(v SyncVariant, stats []agentstats.Stats) []Figure {
	device := map[string]string{"fake": "in-memory", "userspace": "userspace"}[v.Device]
	at := fmt.Sprintf("%s peers, %s device", thousands(v.Records), device)
	if v.Signed {
		at += ", signed"
	}
	var sync, cpu, peak, anon, heap []float64
	for _, s := range stats {
		sync = append(sync, ms(s.Sync))
		cpu = append(cpu, ms(s.CPU))
		peak = append(peak, mb(s.PeakRSS))
		anon = append(anon, mb(s.AnonRSS))
		heap = append(heap, mb(s.HeapLive))
	}
	var syncTarget, rssTarget *Target
	if v.TargetSyncMs > 0 {
		syncTarget = AtMost(StatMedian, v.TargetSyncMs)
	}
	if v.TargetPeakRSSMB > 0 {
		rssTarget = AtMost(StatMax, v.TargetPeakRSSMB)
	}
	return []Figure{
		NewFigure("initial sync", "join → device configured, "+at, "ms", sync, syncTarget),
		NewFigure("initial sync", "agent CPU time, process start → configured, "+at, "ms", cpu, nil),
		NewFigure("initial sync", "agent peak RSS, "+at, "MB", peak, rssTarget),
		NewFigure("initial sync", "agent RSS, anonymous (not the binary), "+at, "MB", anon, nil),
		NewFigure("initial sync", "agent Go heap (live), "+at, "MB", heap, nil),
	}
}
