package integration_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// TestStatusForTheAdminGroup runs an agent whose admin socket is open to a
// group, as the package's ikto group opens it, and ikto-admin status as a
// real unprivileged user (nobody): as a member of the group it reads the
// status; outside it, it is told the permission is missing and which group
// to join, not to check whether the agent runs.
func TestStatusForTheAdminGroup(t *testing.T) {
	m := newMesh(t)
	group := "ikto-t" + m.net.Suffix
	if out, err := exec.Command("groupadd", group).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v\n%s", group, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("groupdel", group).CombinedOutput(); err != nil {
			t.Errorf("groupdel %s: %v\n%s", group, err, out)
		}
	})
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		t.Fatal(err)
	}

	// The socket in a directory the agent makes, under one anyone may
	// enter (t.TempDir's is root's alone).
	h := m.addHosts("alpha")[0]
	h.SocketPath = filepath.Join(harnesstest.SharedDir(t, "ikto-sock-"), "run", "ikto.sock")
	a := harnesstest.StartAgent(t, m.bins, h, m.config(h), "--socket-group", group)
	m.agents[h.Name] = a
	testkit.EventuallyContext(t, convergeTimeout, "alpha synced", func(ctx context.Context) error {
		return checkStatus(ctx, h, 0)
	})
	for path, mode := range map[string]os.FileMode{h.SocketPath: 0o660, filepath.Dir(h.SocketPath): 0o750} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode || int(st.Sys().(*syscall.Stat_t).Gid) != gid {
			t.Errorf("%s: mode %04o, gid %d; want %04o, group %s (%d)", path, st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Gid, mode, group, gid)
		}
	}
	if logs := a.Logs(); !strings.Contains(logs, "readers=\"root, group "+group+"\"") {
		t.Errorf("the agent did not log who may read its socket:\n%s", a.LogTail(20))
	}

	admin, err := m.bins.Path(harness.AdminBinary)
	if err != nil {
		t.Fatal(err)
	}
	admin = copyForNobody(t, admin)
	status := func(groups []uint32) (int, string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, admin, "status", "-s", h.SocketPath)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: groups}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if _, exited := err.(*exec.ExitError); err != nil && !exited {
			t.Fatalf("ikto-admin status as nobody: %v", err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}

	code, stdout, stderr := status([]uint32{uint32(gid)})
	if code != 0 || !strings.Contains(stdout, h.Prefix().String()) {
		t.Errorf("status as nobody in group %s: exit %d, stdout:\n%s\nstderr: %s", group, code, stdout, stderr)
	}

	code, stdout, stderr = status(nil)
	for _, want := range []string{h.SocketPath, "permission denied", "group " + group, "usermod -aG " + group} {
		if !strings.Contains(stderr, want) {
			t.Errorf("status as nobody outside group %s: stderr lacks %q:\n%s", group, want, stderr)
		}
	}
	if code != 1 || stdout != "" || strings.Contains(stderr, "is ikto-agent running") {
		t.Errorf("status as nobody outside group %s: exit %d, stdout %q, stderr %s; want exit 1 and the permission named, not the agent", group, code, stdout, stderr)
	}
}
