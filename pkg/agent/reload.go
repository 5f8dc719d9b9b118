package agent

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/mesh"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// follow applies each config re-read by SIGHUP (Options.Reload) until ctx
// ends. Hooks, resync_interval and persistent_keepalive change at once (and
// log_level, which the caller applies to its logger); every other field that
// differs is named in the log and keeps its running value until a restart.
// A reload never stops the agent.
func (a *Agent) follow(ctx context.Context) {
	cur := *a.set
	for {
		select {
		case <-ctx.Done():
			return
		case next := <-a.opt.Reload:
			if next == nil {
				continue
			}
			cur = a.reload(cur, next)
		}
	}
}

// reload applies next over cur and returns what now runs.
func (a *Agent) reload(cur config.Settings, next *config.Settings) config.Settings {
	var applied []string
	if !slices.EqualFunc(cur.Hooks, next.Hooks, sameHook) {
		a.hooks.Reconfigure(next.Hooks)
		cur.Hooks = next.Hooks
		applied = append(applied, "hooks")
	}
	if cur.Resync != next.Resync || cur.Keepalive != next.Keepalive {
		if cur.Resync != next.Resync {
			applied = append(applied, "resync_interval")
		}
		if cur.Keepalive != next.Keepalive {
			applied = append(applied, "persistent_keepalive")
		}
		cur.Resync, cur.Keepalive = next.Resync, next.Keepalive
		a.ctl.Tune(mesh.Tuning{Resync: cur.Resync, Keepalive: cur.Keepalive})
	}
	if cur.LogLevel != next.LogLevel {
		cur.LogLevel = next.LogLevel
		applied = append(applied, "log_level")
	}
	if cur.PrivateKeyPath != next.PrivateKeyPath {
		if err := a.rotate(next.PrivateKeyPath, cur); err != nil {
			a.log.Error("key rotation refused; the agent keeps its key", "private_key_path", next.PrivateKeyPath, "err", err)
		} else {
			cur.PrivateKeyPath = next.PrivateKeyPath
			applied = append(applied, "private_key_path")
		}
	}
	restart := needsRestart(cur, *next)
	for _, f := range restart {
		a.log.Warn("config field changed; it keeps its running value until the agent restarts", "field", f)
	}
	a.log.Info("config reloaded", "applied", applied, "needs_restart", restart)
	return cur
}

// rotate moves this host to the private key at path (docs/contract.md §5,
// key rotation): its record for the new key carries the old key's
// handover and a higher seq; the keeper writes it over the old record, and
// the controller switches the device once it is in.
func (a *Agent) rotate(path string, cur config.Settings) error {
	next, err := config.LoadPrivateKey(path)
	if err != nil {
		return err
	}
	old := a.key
	if next == old {
		return nil
	}
	self := a.record.Load()
	if self == nil || a.keeper == nil {
		return errors.New("the agent has not claimed its prefix yet; rotate once it has")
	}
	rules := cur.Rules()
	r := *self
	r.PublicKey, r.Handover = next.PublicKey().String(), peer.Handover{}
	r.Seq = max(uint64(time.Now().UnixMicro()), self.Seq+1)
	if err := rules.SignHandover(&r, old); err != nil {
		return err
	}
	if err := rules.SignRecord(&r, next); err != nil {
		return err
	}
	a.key = next
	a.record.Store(&r)
	a.keeper.SetSelf(r, next)
	a.ctl.Tune(mesh.Tuning{Resync: cur.Resync, Keepalive: cur.Keepalive, Rotate: &next})
	a.log.Info("rotating to a new key", "from", old.PublicKey(), "to", next.PublicKey(), "seq", r.Seq)
	return nil
}

// needsRestart names the fields of next that differ from cur and cannot
// change while the agent runs: who this host is, its device, its NATS.
func needsRestart(cur, next config.Settings) []string {
	var out []string
	add := func(field string, differ bool) {
		if differ {
			out = append(out, field)
		}
	}
	add("name", cur.Name != next.Name)
	add("advertise_address", cur.Advertise != next.Advertise)
	add("private_address/subnet_prefix", cur.Prefix != next.Prefix)
	add("mesh_cidr", cur.Mesh != next.Mesh)
	add("wg_dev_name", cur.Device.Name != next.Device.Name)
	add("wg_port", cur.Device.Port != next.Device.Port)
	add("wg_mtu", cur.Device.MTU != next.Device.MTU)
	add("wg_backend", cur.Device.Backend != next.Device.Backend)
	add("nats_url", !slices.Equal(cur.NATS.URLs, next.NATS.URLs))
	add("nats_creds", cur.NATS.Creds != next.NATS.Creds)
	add("nats_tls_ca/nats_tls_cert/nats_tls_key", cur.NATS.TLSCA != next.NATS.TLSCA ||
		cur.NATS.TLSCert != next.NATS.TLSCert || cur.NATS.TLSKey != next.NATS.TLSKey)
	add("nats_kv", cur.NATS.Bucket != next.NATS.Bucket)
	add("nats_kv_replicas", cur.NATS.Replicas != next.NATS.Replicas)
	add("state_dir", cur.StateDir != next.StateDir)
	add("metrics_listen", cur.MetricsListen != next.MetricsListen)
	return out
}

func sameHook(a, b config.Hook) bool {
	return a.Name == b.Name && a.Path == b.Path && string(a.SHA256) == string(b.SHA256) &&
		a.Timeout == b.Timeout && string(a.Config) == string(b.Config)
}
