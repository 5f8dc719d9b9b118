package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// serveMetrics serves GET /metrics on metrics_listen, when set, until ctx
// ends: Prometheus scrapes TCP, not the unix socket. The server runs in
// parts, so that waiting for parts waits until the port is free again (an
// agent taking the device over listens on it next).
func (a *Agent) serveMetrics(ctx context.Context, parts *errgroup.Group) error {
	addr := a.set.MetricsListen
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics_listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	parts.Go(func() error {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics listener failed", "addr", addr, "err", err)
		}
		return nil
	})
	parts.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	})
	a.log.Info("serving metrics", "addr", l.Addr().String())
	return nil
}
