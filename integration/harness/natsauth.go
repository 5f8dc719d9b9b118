package harness

import (
	_ "embed" // the least-privilege config ships as a file beside this one
	"fmt"
	"strings"
	"sync"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
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
// configuration text, as an operator would run it. It records every
// permission violation the server logs, so a test can show that clients
// needed nothing beyond what the configuration grants.
type ConfNATS struct {
	*natsserver.Server
	log *violationLog
}

// StartConfNATS starts a server from conf (nats-server configuration syntax;
// $VARIABLES not defined in it are read from the environment) where opts
// says, with JetStream in opts.StoreDir.
func StartConfNATS(opts natsserver.Options, conf string) (*ConfNATS, error) {
	log := &violationLog{}
	opts.Config, opts.Logger = conf, log
	if opts.ServerName == "" {
		opts.ServerName = "ikto-test-auth"
	}
	s, err := natsserver.Start(opts)
	if err != nil {
		return nil, err
	}
	return &ConfNATS{Server: s, log: log}, nil
}

// Violations returns the permission violations logged so far.
func (n *ConfNATS) Violations() []string { return n.log.violations() }

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
