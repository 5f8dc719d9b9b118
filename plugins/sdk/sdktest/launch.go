package sdktest

import (
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// Build compiles the hook's main package in the test's working directory
// (the package under test) into a temporary directory and returns the
// executable's path, for tests that run the real binary through Launch.
func Build(t testing.TB) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("sdktest: go toolchain not in PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "hook")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("sdktest: go build: %v\n%s", err, out)
	}
	return bin
}

// LaunchOptions adjust Launch.
type LaunchOptions struct {
	// Stdout and Stderr receive the hook process's output streams (stdout
	// after go-plugin's handshake line). Nil discards them.
	Stdout, Stderr io.Writer
	// Within, when set, is handed the call that starts the process, e.g. to
	// run it on a thread switched into a network namespace: a child starts
	// in the namespace of the thread that forks it.
	Within func(start func() error) error
}

// Launched is a hook binary running as a go-plugin subprocess.
type Launched struct {
	sdk.Hook
	client *plugin.Client
}

// Kill stops the process (asking it to shut down first) and waits for it
// and its output streams.
func (l *Launched) Kill() { l.client.Kill() }

// Exited reports whether the process has exited.
func (l *Launched) Exited() bool { return l.client.Exited() }

// Launch starts the hook executable bin the way ikto-agent starts hooks
// (go-plugin over gRPC, an empty environment) and returns the agent's side
// of the connection. The process is killed by t.Cleanup.
func Launch(t testing.TB, bin string, opt LaunchOptions) *Launched {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{}
	cc := sdk.ClientConfig(cmd)
	cc.SkipHostEnv = true
	cc.Logger = hclog.NewNullLogger()
	cc.SyncStdout, cc.Stderr = orDiscard(opt.Stdout), orDiscard(opt.Stderr)
	client := plugin.NewClient(cc)
	t.Cleanup(client.Kill)

	var rpc plugin.ClientProtocol
	start := func() (err error) {
		rpc, err = client.Client()
		return err
	}
	run := start
	if opt.Within != nil {
		run = func() error { return opt.Within(start) }
	}
	if err := run(); err != nil {
		t.Fatalf("sdktest: start %s: %v", bin, err)
	}
	h, err := sdk.Dispense(rpc)
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	return &Launched{Hook: h, client: client}
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
