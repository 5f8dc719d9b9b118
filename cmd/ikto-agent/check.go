package main

import (
	"encoding/hex"

	"github.com/ikto-mesh/ikto/pkg/config"
)

// resolved is what --check-config prints: every setting as the agent will
// use it, defaults filled in, under the config's field names.
type resolved struct {
	Name                string         `json:"name"`
	AdvertiseAddress    string         `json:"advertise_address"`
	Prefix              string         `json:"prefix"`
	MeshCIDR            string         `json:"mesh_cidr"`
	DeviceAddress       string         `json:"device_address"`
	WGDevName           string         `json:"wg_dev_name"`
	WGPort              int            `json:"wg_port"`
	WGMTU               int            `json:"wg_mtu"`
	WGBackend           string         `json:"wg_backend"`
	PersistentKeepalive string         `json:"persistent_keepalive"`
	PrivateKeyPath      string         `json:"private_key_path"`
	NATSURL             []string       `json:"nats_url"`
	NATSCreds           string         `json:"nats_creds,omitempty"`
	NATSTLS             []string       `json:"nats_tls,omitempty"`
	NATSKV              string         `json:"nats_kv"`
	NATSKVReplicas      int            `json:"nats_kv_replicas"`
	ResyncInterval      string         `json:"resync_interval"`
	StateDir            string         `json:"state_dir,omitempty"`
	LogLevel            string         `json:"log_level,omitempty"`
	MetricsListen       string         `json:"metrics_listen,omitempty"`
	Hooks               []resolvedHook `json:"hooks,omitempty"`
}

type resolvedHook struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	SHA256  string `json:"sha256,omitempty"`
	Timeout string `json:"timeout"`
}

func settingsView(s config.Settings) resolved {
	r := resolved{
		Name: s.Name, AdvertiseAddress: s.Advertise.String(), Prefix: s.Prefix.String(), MeshCIDR: s.Mesh.String(),
		DeviceAddress: s.Device.Address.String(), WGDevName: s.Device.Name, WGPort: s.Device.Port, WGMTU: s.Device.MTU,
		WGBackend: string(s.Device.Backend), PersistentKeepalive: s.Keepalive.String(), PrivateKeyPath: s.PrivateKeyPath,
		NATSURL: s.NATS.URLs, NATSCreds: s.NATS.Creds, NATSKV: s.NATS.Bucket, NATSKVReplicas: s.NATS.Replicas,
		ResyncInterval: s.Resync.String(), StateDir: s.StateDir, LogLevel: s.LogLevel, MetricsListen: s.MetricsListen,
	}
	for _, f := range []string{s.NATS.TLSCA, s.NATS.TLSCert, s.NATS.TLSKey} {
		if f != "" {
			r.NATSTLS = append(r.NATSTLS, f)
		}
	}
	for _, h := range s.Hooks {
		r.Hooks = append(r.Hooks, resolvedHook{Name: h.Name, Path: h.Path, SHA256: hex.EncodeToString(h.SHA256), Timeout: h.Timeout.String()})
	}
	return r
}
