// Package metrics defines the agent's Prometheus metrics (docs/contract.md §7). Each agent
// has its own registry, so several agents can run in one process (tests,
// benchmarks) without colliding; GET /metrics serves it.
package metrics

import (
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Agent is every metric an agent exports.
type Agent struct {
	reg *prometheus.Registry

	PeersDesired      prometheus.Gauge
	PeersConfigured   prometheus.Gauge
	RecordsRejected   *prometheus.GaugeVec   // rejected records in the bucket now, by reason
	Rejections        *prometheus.CounterVec // rejections seen, once per record revision, by reason
	WatchEvents       prometheus.Counter
	WatchSnapshots    prometheus.Counter
	Reconciles        *prometheus.CounterVec // by result: ok | error
	ReconcileDuration prometheus.Histogram
	PeerChanges       *prometheus.CounterVec // by op: add | update | remove
	NATSConnected     prometheus.Gauge
	NATSReconnects    prometheus.Counter
	heartbeatAt       atomic.Int64           // unix nanos of the last heartbeat written, 0 = never
	HookFailures      *prometheus.CounterVec // by hook
	HookRestarts      *prometheus.CounterVec // by hook
	HookUp            *prometheus.GaugeVec   // by hook
	ClaimContested    prometheus.Gauge       // 1 while another value holds this host's prefix
	ClaimRepairs      *prometheus.CounterVec // by action: bucket | reclaim | defend | release
	FollowRereads     prometheus.Counter     // ranges of the bucket's stream read again (lost republished messages)
	// DuplicateIdentity is 1 while another live agent runs with this
	// host's key; DuplicateIdentities counts such agents, once each.
	DuplicateIdentity   prometheus.Gauge
	DuplicateIdentities prometheus.Counter
	// FirstContacts counts the first handshakes orchestrated, by how they
	// ended: handshake | bound (none within the bound; left to WireGuard).
	// FirstContactRestarts counts handshakes started again as crossed.
	FirstContacts        *prometheus.CounterVec
	FirstContactRestarts prometheus.Counter
}

// NewAgent registers the agent's metrics (and the Go runtime and process
// collectors) in a fresh registry.
func NewAgent() *Agent {
	m := &Agent{
		reg:             prometheus.NewRegistry(),
		PeersDesired:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "ikto_peers_desired", Help: "Peers the accepted bucket records ask for."}),
		PeersConfigured: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ikto_peers_configured", Help: "Peers on the WireGuard device after the last reconcile."}),
		RecordsRejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ikto_records_rejected", Help: "Bucket records currently rejected, by reason."}, []string{"reason"}),
		Rejections:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ikto_record_rejections_total", Help: "Record revisions rejected, by reason (each revision counted once)."}, []string{"reason"}),
		WatchEvents:     prometheus.NewCounter(prometheus.CounterOpts{Name: "ikto_watch_events_total", Help: "Bucket updates received from the watch."}),
		WatchSnapshots:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ikto_watch_snapshots_total", Help: "Full bucket snapshots loaded (start and every reconnect)."}),
		Reconciles:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ikto_reconcile_runs_total", Help: "Reconcile passes, by result."}, []string{"result"}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ikto_reconcile_duration_seconds", Help: "Time of one reconcile pass, device call included.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10), // 50µs .. 13s
		}),
		PeerChanges:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ikto_peer_changes_total", Help: "Peer changes applied to the device, by op."}, []string{"op"}),
		NATSConnected:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "ikto_nats_connected", Help: "1 while connected to a NATS server."}),
		NATSReconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "ikto_nats_reconnects_total", Help: "Reconnections to NATS."}),
		HookFailures:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ikto_hook_failures_total", Help: "Hook calls that failed, timed out or crashed, by hook."}, []string{"hook"}),
		HookRestarts:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ikto_hook_restarts_total", Help: "Hook processes started again after a failure, by hook."}, []string{"hook"}),
		HookUp:         prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ikto_hook_up", Help: "1 while the hook's process runs and has taken its configuration, by hook."}, []string{"hook"}),
		ClaimContested: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ikto_claim_contested", Help: "1 while another key's record or a non-record holds this host's prefix (contested or lost)."}),
		ClaimRepairs:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ikto_claim_repairs_total", Help: "Repairs of this host's claim written to the bucket, by action."}, []string{"action"}),
		FollowRereads:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ikto_follow_rereads_total", Help: "Ranges of the bucket's stream read again because what it republished was lost on the way."}),
		DuplicateIdentity: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ikto_duplicate_identity",
			Help: "1 while another live agent runs with this host's key and prefix (a cloned host, or one config on two hosts)."}),
		DuplicateIdentities: prometheus.NewCounter(prometheus.CounterOpts{Name: "ikto_duplicate_identities_total",
			Help: "Other agents seen running with this host's key, each counted once, when first seen."}),
		FirstContacts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ikto_first_contacts_total",
			Help: "First handshakes with new peers orchestrated, by how they ended: handshake, or bound (none in time; the peer is left to WireGuard's retries)."}, []string{"end"}),
		FirstContactRestarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "ikto_first_contact_restarts_total",
			Help: "First handshakes started again because the two ends' initiations crossed."}),
	}
	m.reg.MustRegister(
		m.PeersDesired, m.PeersConfigured, m.RecordsRejected, m.Rejections, m.WatchEvents, m.WatchSnapshots,
		m.Reconciles, m.ReconcileDuration, m.PeerChanges, m.NATSConnected, m.NATSReconnects,
		m.HookFailures, m.HookRestarts, m.HookUp, m.ClaimContested, m.ClaimRepairs, m.FollowRereads,
		m.DuplicateIdentity, m.DuplicateIdentities, m.FirstContacts, m.FirstContactRestarts,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ikto_heartbeat_age_seconds",
			Help: "Seconds since this agent last wrote its heartbeat; -1 before the first.",
		}, m.heartbeatAge),
		buildInfo(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Every reason and op exists from the start, so a dashboard sees zeros
	// instead of missing series.
	for _, r := range peer.Reasons {
		m.RecordsRejected.WithLabelValues(string(r))
		m.Rejections.WithLabelValues(string(r))
	}
	for _, op := range []string{"add", "update", "remove"} {
		m.PeerChanges.WithLabelValues(op)
	}
	for _, a := range []string{"bucket", "reclaim", "defend", "release", "revoke"} {
		m.ClaimRepairs.WithLabelValues(a)
	}
	for _, res := range []string{"ok", "error"} {
		m.Reconciles.WithLabelValues(res)
	}
	for _, end := range []string{"handshake", "bound"} {
		m.FirstContacts.WithLabelValues(end)
	}
	return m
}

// buildInfo is ikto_build_info{version,commit,goversion} 1: which build runs,
// for dashboards that join it to the other series.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ikto_build_info", Help: "The running agent's build: always 1."},
		[]string{"version", "commit", "goversion"})
	g.WithLabelValues(cli.Version, cli.Commit, runtime.Version()).Set(1)
	return g
}

// HeartbeatWritten records a successful heartbeat write at t.
func (m *Agent) HeartbeatWritten(t time.Time) { m.heartbeatAt.Store(t.UnixNano()) }

func (m *Agent) heartbeatAge() float64 {
	at := m.heartbeatAt.Load()
	if at == 0 {
		return -1
	}
	return time.Since(time.Unix(0, at)).Seconds()
}

// Handler serves the registry in the Prometheus text format.
func (m *Agent) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is the agent's registry (tests gather from it).
func (m *Agent) Registry() *prometheus.Registry { return m.reg }
