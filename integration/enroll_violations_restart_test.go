package integration_test

import (
	"github.com/ikto-mesh/ikto/integration/harness"
)

// natsRestarter returns how to restart the world's server: the embedded
// one restarts on its port and store; Debian's is killed by PID and run
// again with its configuration file (NATSProcess.Restart), which keeps its
// port, store, resolver directory and log.
func (c *churn) natsRestarter() func(stopped func()) {
	switch s := c.w.srv.(type) {
	case *harness.ConfNATS:
		return func(stopped func()) {
			s.Shutdown()
			stopped()
			if err := s.Start(); err != nil {
				c.t.Fatal(err)
			}
		}
	case *harness.NATSProcess:
		return func(stopped func()) {
			if err := s.Restart(stopped); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	c.t.Fatalf("cannot restart a %T", c.w.srv)
	return nil
}
