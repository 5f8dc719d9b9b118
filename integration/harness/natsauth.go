package harness

import (
	_ "embed" // the least-privilege config ships as a file beside this one
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// LeastPrivilegeConf is least-privilege.conf: the nats-server configuration
// with one user for hosts and one for operators that the README documents.
// Its passwords come from $IKTO_HOST_PASSWORD and $IKTO_OPERATOR_PASSWORD.
//
//go:embed least-privilege.conf
var LeastPrivilegeConf string

// Users of LeastPrivilegeConf.
const (
	HostUser     = "ikto-host"
	OperatorUser = "ikto-operator"
)

// ConfNATS is an embedded nats-server configured from nats-server
// configuration text, as an operator would run it, listening where opts
// says. It records every permission violation the server logs, so a test can
// show that clients needed nothing beyond what the configuration grants.
type ConfNATS struct {
	srv *server.Server
	log *violationLog
}

// StartConfNATS starts a server from conf (nats-server configuration syntax;
// $VARIABLES not defined in it are read from the environment) on opts.Host
// and a free port, with JetStream in opts.StoreDir.
func StartConfNATS(opts NATSOptions, conf string) (*ConfNATS, error) {
	o := &server.Options{}
	if err := o.ProcessConfigString(conf); err != nil {
		return nil, fmt.Errorf("nats config: %w", err)
	}
	port := opts.Port
	if port <= 0 {
		p, err := FreePort(opts.Host)
		if err != nil {
			return nil, err
		}
		port = p
	}
	o.ServerName = "ikto-test-auth"
	o.Host, o.Port = opts.Host.String(), port
	o.JetStream, o.StoreDir = true, opts.StoreDir
	o.NoSigs = true
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("nats %s:%d: %w", opts.Host, port, err)
	}
	n := &ConfNATS{srv: srv, log: &violationLog{}}
	srv.SetLoggerV2(n.log, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(natsReadyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats %s:%d: not ready after %s", opts.Host, port, natsReadyTimeout)
	}
	return n, nil
}

// URL is the client URL carrying user and password.
func (n *ConfNATS) URL(user, password string) string {
	addr := n.srv.Addr().(*net.TCPAddr)
	u := url.URL{Scheme: "nats", User: url.UserPassword(user, password), Host: net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))}
	return u.String()
}

// Violations returns the permission violations logged so far.
func (n *ConfNATS) Violations() []string { return n.log.violations() }

// Close shuts the server down and waits until it is gone.
func (n *ConfNATS) Close() error {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	return nil
}

// violationLog is a server.Logger that keeps only permission violations.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) keep(format string, args []any) {
	line := fmt.Sprintf(format, args...)
	if !strings.Contains(line, "Violation") {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
}

func (l *violationLog) violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func (l *violationLog) Noticef(format string, v ...any) { l.keep(format, v) }
func (l *violationLog) Warnf(format string, v ...any)   { l.keep(format, v) }
func (l *violationLog) Fatalf(format string, v ...any)  { l.keep(format, v) }
func (l *violationLog) Errorf(format string, v ...any)  { l.keep(format, v) }
func (l *violationLog) Debugf(format string, v ...any)  { l.keep(format, v) }
func (l *violationLog) Tracef(format string, v ...any)  { l.keep(format, v) }
