package natsctx

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/natsctx/natsctxtest"
)

// The settings a context or the environment gives reach a real server
// through bucket.Dial: a password or a token authenticates, a wrong one is
// refused.
func TestResolvedSettingsAuthenticate(t *testing.T) {
	users := natstest.StartWith(t, natsserver.Options{Config: `authorization { user: ops, password: "s3 cret:/@" }`})
	token := natstest.StartWith(t, natsserver.Options{Config: `authorization { token: t0k3n }`})
	xdg := natsctxtest.WriteContexts(t, "", map[string]string{
		"users":     `{"url": "` + users.URL() + `", "user": "ops", "password": "s3 cret:/@"}`,
		"token":     `{"url": "` + token.URL() + `", "token": "t0k3n"}`,
		"badtoken":  `{"url": "` + token.URL() + `", "token": "nope"}`,
		"envsecret": `{"url": "` + users.URL() + `", "user": "ops"}`,
	})
	for _, tc := range []struct {
		context string
		env     env
		wantErr bool
	}{
		{context: "users"},
		{context: "token"},
		{context: "badtoken", wantErr: true},
		{context: "envsecret", env: env{"NATS_PASSWORD": "s3 cret:/@"}},
		{context: "envsecret", env: env{"NATS_PASSWORD": "wrong"}, wantErr: true},
	} {
		e := env{"XDG_CONFIG_HOME": xdg}
		for k, v := range tc.env {
			e[k] = v
		}
		r, err := Resolve(Settings{}, Settings{}, tc.context, e.get)
		if err != nil {
			t.Fatal(err)
		}
		s, err := r.NATS("ikto-mesh")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := bucket.Dial(s, bucket.Client{Name: "natsctx-test", Timeout: 5 * time.Second})
		if tc.wantErr {
			if err == nil {
				conn.Close()
				t.Errorf("context %s %v: connected, want the server to refuse", tc.context, tc.env)
			}
			continue
		}
		if err != nil {
			t.Errorf("context %s %v: %v", tc.context, tc.env, err)
			continue
		}
		_, err = conn.Open(context.Background(), true)
		conn.Close()
		if err != nil && !errors.Is(err, bucket.ErrBucketMissing) {
			t.Errorf("context %s: open bucket: %v", tc.context, err)
		}
		if strings.Contains(conn.Servers, "s3 cret") {
			t.Errorf("Servers %q shows the password", conn.Servers)
		}
	}
}
