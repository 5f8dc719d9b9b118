package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	host, err := w.net.AddHost("sync")
	if err != nil {
		return nil, err
	}
	fleet, err := NewFleet(w.net.Mesh, config.DefaultSubnetPrefix)
	if err != nil {
		return nil, err
	}
	buckets := map[int]jetstream.KeyValue{}
	for _, v := range variants {
		kv, ok := buckets[v.Records]
		if !ok {
			if kv, err = fillBucket(ctx, w, fleet, "sync-"+strconv.Itoa(v.Records), v.Records); err != nil {
				return nil, err
			}
			buckets[v.Records] = kv
		}
		var stats []agentstats.Stats
		for run := range v.Runs {
			st, err := joinOnce(ctx, bins, host, fleet, w.nats.URL(), kv, v, run)
			if err != nil {
				return nil, fmt.Errorf("%s device, %d records, run %d: %w", v.Device, v.Records, run+1, err)
			}
			stats = append(stats, st)
		}
		log.Info("initial sync measured", "device", v.Device, "records", v.Records, "runs", v.Runs)
		figs = append(figs, syncFigures(v, stats)...)
	}
	return figs, nil
}

// fillBucket makes the bucket name and puts n claims in it.
func fillBucket(ctx context.Context, w *world, fleet *Fleet, name string, n int) (jetstream.KeyValue, error) {
	kv, err := w.bucket(ctx, name)
	if err != nil {
		return nil, err
	}
	recs, err := fleet.Records(n)
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
