package hook

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/hook/hooktest"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

// helperEnv makes the test binary a stand-in agent: it runs a Host with the
// recorder hook recording into the directory named by the variable, until
// it is killed.
const helperEnv = "IKTO_HOOK_TEST_AGENT_DIR"

func runHelperAgent() int {
	dir := os.Getenv(helperEnv)
	rec := os.Getenv("IKTO_HOOK_TEST_RECORDER")
	h := New([]config.Hook{{Name: "orphan", Path: rec, Timeout: config.DefaultHookTimeout, Config: hooktest.Config(dir)}}, testNode,
		Options{Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	h.Update(sdktest.Peers(1))
	if err := h.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return 1
}

// An agent that dies without stopping its hooks (SIGKILL, a crash) takes
// them with it.
func TestHookDiesWithTheAgent(t *testing.T) {
	dir := t.TempDir()
	agent := exec.Command(os.Args[0], "-test.run=^$")
	// The killed agent cannot remove its socket directory: keep it in ours.
	agent.Env = append(os.Environ(), helperEnv+"="+dir, "IKTO_HOOK_TEST_RECORDER="+recorderPath, "TMPDIR="+t.TempDir())
	agent.Stderr = &logbuf.Buffer{}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		_ = agent.Wait()
		for _, pid := range pids(t, dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	testkit.Eventually(t, waitTimeout, "the stand-in agent's hook to apply", testkit.True(func() bool { return lastApply(hooktest.Calls(t, dir), 0) != nil }))
	hookPID := pids(t, dir)[0]

	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait()
	testkit.Eventually(t, waitTimeout, fmt.Sprintf("hook process %d to die with its agent", hookPID), testkit.True(func() bool { return !hooktest.Alive(hookPID) }))
}
