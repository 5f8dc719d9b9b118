package main

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/bucket"
)

// init-bucket makes both buckets refuse rollups, and changes buckets made
// before (by ikto 0.4, or by nats.go's defaults) that allow them.
func TestInitBucketRefusesRollups(t *testing.T) {
	url, js := startNATS(t)
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ikto-mesh"}); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := exec(t, "health", "--nats-url", url)
	if code != 1 || !strings.Contains(stdout, "unsafe bucket: ") || !strings.Contains(stdout, "ikto-admin init-bucket") {
		t.Errorf("health over a bucket that allows rollups: exit %d, want 1 naming init-bucket\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = exec(t, "init-bucket", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "bucket ikto-mesh: changed to refuse Nats-Rollup headers") ||
		!strings.Contains(stdout, "bucket ikto-mesh exists: history 1, replicas 1, max age none, rollups refused") ||
		!strings.Contains(stdout, "heartbeat bucket ikto-mesh-live created: history 1, replicas 1, max age 24h0m0s, rollups refused") {
		t.Fatalf("init-bucket over an old bucket: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, name := range []string{"ikto-mesh", "ikto-mesh-live"} {
		st, err := js.Stream(ctx, "KV_"+name)
		if err != nil {
			t.Fatal(err)
		}
		if p := bucket.Problems(st.CachedInfo().Config); len(p) != 0 {
			t.Errorf("%s after init-bucket: %v", name, p)
		}
	}
	if code, stdout, stderr := exec(t, "health", "--nats-url", url); code != 0 || strings.Contains(stdout, "unsafe") {
		t.Errorf("health after init-bucket: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = exec(t, "init-bucket", "--nats-url", url)
	if code != 0 || strings.Contains(stdout, "changed") {
		t.Errorf("init-bucket again: exit %d, want nothing changed\n%s%s", code, stdout, stderr)
	}
}
