package natsserver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit"
)

// clusterReadyTimeout bounds the wait for a cluster to elect its JetStream
// meta leader after its servers start.
const clusterReadyTimeout = 30 * time.Second

// ClusterOptions says where an embedded JetStream cluster listens and keeps
// its data.
type ClusterOptions struct {
	// Host is the address every server listens on (clients and routes);
	// the zero value is 127.0.0.1.
	Host netip.Addr
	// Size is the number of servers; 0 means 3, the smallest cluster that
	// keeps an R3 bucket writable with one server down.
	Size int
	// Dir holds one JetStream store per server, kept across restarts.
	Dir string
	// Name is the cluster's name; empty is "ikto-test".
	Name string
}

// Cluster is a JetStream cluster of embedded servers on random ports. Each
// server can be stopped and started again on its ports with its store, as a
// member that went down and came back.
type Cluster struct {
	Servers []*Server
}

// NewCluster picks every server's client and route ports and prepares the
// servers without starting them; Start starts them.
func NewCluster(opts ClusterOptions) (*Cluster, error) {
	if !opts.Host.IsValid() {
		opts.Host = loopback
	}
	if opts.Dir == "" {
		return nil, errors.New("nats cluster: no store dir")
	}
	if opts.Size == 0 {
		opts.Size = 3
	}
	if opts.Name == "" {
		opts.Name = defaultName
	}
	// Every port is picked before any server starts: each server's routes
	// name all the others, and a restart must find them where they were.
	// They are picked together, so no two are the same.
	ports, err := freePorts(opts.Host, 2*opts.Size)
	if err != nil {
		return nil, err
	}
	routes := make([]netip.AddrPort, opts.Size)
	clients := make([]int, opts.Size)
	for i := range routes {
		routes[i], clients[i] = netip.AddrPortFrom(opts.Host, uint16(ports[2*i])), ports[2*i+1]
	}
	c := &Cluster{}
	for i := range opts.Size {
		store := filepath.Join(opts.Dir, fmt.Sprintf("n%d", i+1))
		if err := os.MkdirAll(store, 0o700); err != nil {
			return nil, fmt.Errorf("nats cluster: store dir: %w", err)
		}
		n, err := New(Options{
			Host: opts.Host, Port: clients[i], StoreDir: store,
			ServerName: fmt.Sprintf("%s-n%d", opts.Name, i+1),
			Cluster:    ClusterMember{Name: opts.Name, Port: int(routes[i].Port()), Routes: routes},
		})
		if err != nil {
			return nil, err
		}
		c.Servers = append(c.Servers, n)
	}
	return c, nil
}

// Start starts every server that is not running, all at once, and waits
// until they accept clients and the cluster has a JetStream meta leader (so
// that a bucket can be created).
func (c *Cluster) Start() error {
	errs := make([]error, len(c.Servers))
	var wg sync.WaitGroup
	for i, n := range c.Servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Start()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.WaitReady(context.Background())
}

// WaitReady waits until the cluster has a JetStream meta leader and every
// running member is current with it: a member that has just restarted is
// caught up before a test takes another one down.
func (c *Cluster) WaitReady(ctx context.Context) error {
	err := testkit.Poll(ctx, clusterReadyTimeout, func(context.Context) error {
		leaders := 0
		for _, n := range c.Servers {
			running, leader, current := n.jetStreamState()
			if running && !current {
				return fmt.Errorf("%s is not current with the JetStream meta group yet", n.Name())
			}
			if leader {
				leaders++
			}
		}
		if leaders == 0 {
			return errors.New("no JetStream meta leader yet")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nats cluster: %w", err)
	}
	return nil
}

// URL is every server's client URL, comma-separated, as nats_url takes it.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.Servers))
	for i, n := range c.Servers {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// ServerAt is the member whose client URL (or host:port) is addr, as an
// agent's status reports the server it is connected to.
func (c *Cluster) ServerAt(addr string) (*Server, error) {
	hostPort := strings.TrimPrefix(addr, "nats://")
	for _, n := range c.Servers {
		if n.Addr().String() == hostPort {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no server of the cluster listens on %q", addr)
}

// Running is the members that are up.
func (c *Cluster) Running() []*Server {
	var up []*Server
	for _, n := range c.Servers {
		if n.Running() {
			up = append(up, n)
		}
	}
	return up
}

// Shutdown stops every server.
func (c *Cluster) Shutdown() {
	for _, n := range c.Servers {
		n.Shutdown()
	}
}

// Close is Shutdown.
func (c *Cluster) Close() error {
	c.Shutdown()
	return nil
}
