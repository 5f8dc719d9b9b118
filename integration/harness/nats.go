package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsReadyTimeout bounds how long a server may take to accept clients.
const natsReadyTimeout = 10 * time.Second

// NATSOptions says where an embedded server listens and keeps its data.
type NATSOptions struct {
	// Host is the address to listen on: the network's Gateway, so that the
	// namespaces reach it.
	Host netip.Addr
	// Port is the TCP port; 0 or -1 picks a free one at the first start.
	// FreePort picks one ahead, for a server that starts after its clients.
	Port int
	// StoreDir is the JetStream directory (a temp dir), kept across
	// restarts so the bucket survives them.
	StoreDir string
	// ServerName names the server; empty is "ikto-test". The servers of
	// a cluster need distinct names.
	ServerName string
	// Cluster, when its Name is set, makes the server a member of a
	// JetStream cluster; NewCluster fills it in.
	Cluster ClusterMember
}

// ClusterMember is one server's part of a cluster: its route port and the
// route address of every member (itself included, which the server skips).
type ClusterMember struct {
	Name   string
	Port   int
	Routes []netip.AddrPort
}

// NATS is an embedded nats-server with JetStream that can be stopped and
// started again on the same port and store.
type NATS struct {
	opts NATSOptions
	mu   sync.Mutex
	srv  *server.Server
}

// NewNATS prepares a server without starting it; see StartNATS.
func NewNATS(opts NATSOptions) (*NATS, error) {
	if !opts.Host.IsValid() {
		return nil, errors.New("nats: no listen host")
	}
	if opts.StoreDir == "" {
		return nil, errors.New("nats: no store dir")
	}
	if opts.Port <= 0 {
		p, err := FreePort(opts.Host)
		if err != nil {
			return nil, err
		}
		opts.Port = p
	}
	return &NATS{opts: opts}, nil
}

// StartNATS prepares a server and starts it.
func StartNATS(opts NATSOptions) (*NATS, error) {
	n, err := NewNATS(opts)
	if err != nil {
		return nil, err
	}
	if err := n.Start(); err != nil {
		return nil, err
	}
	return n, nil
}

// FreePort returns a TCP port on host that was free a moment ago.
func FreePort(host netip.Addr) (int, error) {
	l, err := net.Listen("tcp", netip.AddrPortFrom(host, 0).String())
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts the server if it is not running and waits until it accepts
// clients. A restart keeps the port and the JetStream store.
func (n *NATS) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil && n.srv.Running() {
		return nil
	}
	srv, err := server.NewServer(n.serverOptions())
	if err != nil {
		return fmt.Errorf("nats %s: %w", n.Addr(), err)
	}
	srv.Start()
	if !srv.ReadyForConnections(natsReadyTimeout) {
		srv.Shutdown()
		return fmt.Errorf("nats %s: not ready after %s", n.Addr(), natsReadyTimeout)
	}
	n.srv = srv
	return nil
}

func (n *NATS) serverOptions() *server.Options {
	o := &server.Options{
		ServerName: n.opts.ServerName,
		Host:       n.opts.Host.String(),
		Port:       n.opts.Port,
		JetStream:  true,
		StoreDir:   n.opts.StoreDir,
		NoLog:      true,
		NoSigs:     true,
	}
	if o.ServerName == "" {
		o.ServerName = "ikto-test"
	}
	if c := n.opts.Cluster; c.Name != "" {
		o.Cluster = server.ClusterOpts{Name: c.Name, Host: n.opts.Host.String(), Port: c.Port}
		for _, r := range c.Routes {
			o.Routes = append(o.Routes, &url.URL{Scheme: "nats-route", Host: r.String()})
		}
	}
	return o
}

// Shutdown stops the server and waits until it is gone. Clients see the
// connection drop. Shutting down a stopped server does nothing.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// Close is Shutdown, for symmetry with the rest of the harness.
func (n *NATS) Close() error {
	n.Shutdown()
	return nil
}

// Running reports whether the server is up.
func (n *NATS) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv != nil && n.srv.Running()
}

// Addr is host:port.
func (n *NATS) Addr() netip.AddrPort {
	return netip.AddrPortFrom(n.opts.Host, uint16(n.opts.Port))
}

// URL is the client URL, nats://host:port, valid before the first Start.
func (n *NATS) URL() string {
	return "nats://" + net.JoinHostPort(n.opts.Host.String(), strconv.Itoa(n.opts.Port))
}

// Name is the server's name.
func (n *NATS) Name() string { return n.serverOptions().ServerName }

// jetStreamState reports whether the server is running, leads its
// cluster's JetStream meta group, and is current with it (a single running
// server is all three).
func (n *NATS) jetStreamState() (running, leader, current bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil || !n.srv.Running() {
		return false, false, false
	}
	if n.opts.Cluster.Name == "" {
		return true, true, true
	}
	return true, n.srv.JetStreamIsLeader(), n.srv.JetStreamIsCurrent()
}

// Bucket is a test's own handle on the agents' KV bucket.
type Bucket struct {
	jetstream.KeyValue
	Conn *nats.Conn
}

// OpenBucket connects to natsURL (one server, or several comma-separated) and
// opens bucket, creating it (with default settings) when it does not exist
// yet.
func OpenBucket(ctx context.Context, natsURL, bucket string) (*Bucket, error) {
	return openBucket(ctx, natsURL, bucket, true)
}

// OpenExistingBucket is OpenBucket for a bucket the agents create (with
// their nats_kv_replicas): it fails with jetstream.ErrBucketNotFound instead
// of creating it.
func OpenExistingBucket(ctx context.Context, natsURL, bucket string) (*Bucket, error) {
	return openBucket(ctx, natsURL, bucket, false)
}

func openBucket(ctx context.Context, natsURL, bucket string, create bool) (*Bucket, error) {
	nc, err := nats.Connect(natsURL, nats.Name("ikto-harness"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream on %s: %w", natsURL, err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if create && errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket) // an agent made it meanwhile
		}
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("open bucket %s on %s: %w", bucket, natsURL, err)
	}
	return &Bucket{KeyValue: kv, Conn: nc}, nil
}

// Replicas is the number of replicas the bucket's stream has.
func (b *Bucket) Replicas(ctx context.Context) (int, error) {
	st, err := b.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("status of bucket %s: %w", b.Bucket(), err)
	}
	js, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, fmt.Errorf("status of bucket %s: unexpected type %T", b.Bucket(), st)
	}
	return js.StreamInfo().Config.Replicas, nil
}

// Close closes the connection.
func (b *Bucket) Close() error {
	b.Conn.Close()
	return nil
}

// Records decodes every peers.* entry, by key. Entries that do not decode
// are skipped: the bucket may hold what a test put there on purpose.
func (b *Bucket) Records(ctx context.Context) (map[string]peer.Record, error) {
	keys, err := b.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list bucket %s: %w", b.Bucket(), err)
	}
	out := map[string]peer.Record{}
	for key := range keys.Keys() {
		if len(key) < len(peer.PeersPrefix) || key[:len(peer.PeersPrefix)] != peer.PeersPrefix {
			continue
		}
		e, err := b.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", key, err)
		}
		var r peer.Record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			continue
		}
		out[key] = r
	}
	return out, nil
}

// Record reads the record of prefix.
func (b *Bucket) Record(ctx context.Context, prefix netip.Prefix) (peer.Record, error) {
	key := peer.Key(prefix)
	e, err := b.Get(ctx, key)
	if err != nil {
		return peer.Record{}, fmt.Errorf("get %s (%s): %w", key, prefix, err)
	}
	var r peer.Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return peer.Record{}, fmt.Errorf("decode %s (%s): %w", key, prefix, err)
	}
	return r, nil
}
