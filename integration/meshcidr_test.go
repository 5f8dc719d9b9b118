package integration_test

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// TestSecondMeshOnTheSameCIDR runs a mesh on alpha, then asks alpha to join
// a second mesh (its own bucket, device, port and socket) with the same
// mesh_cidr, as two meshes that both keep the default fd10::/16 would:
// ikto-agent --check-config and the agent must refuse it, naming alpha's
// first device, its prefix and the fix, and write nothing to the second
// mesh's buckets (nor the first's). A bridge with an address
// inside the mesh is refused the same way; another mesh_cidr passes.
func TestSecondMeshOnTheSameCIDR(t *testing.T) {
	t.Parallel()
	m, _, hosts, _ := startAdminMesh(t, "alpha", "bravo")
	alpha := hosts[0]
	// other lends the second mesh a device name, key and prefix of its own;
	// its agent runs in alpha's namespace.
	other := m.addHosts("other")[0]
	agentBin, err := m.bins.Path(harness.AgentBinary)
	if err != nil {
		t.Fatal(err)
	}
	dir := harnesstest.SharedDir(t, "ikto-second-mesh-")
	second := other.Config(m.natsURL(), "ikto-second")
	second.WGPort = config.DefaultPort + 1
	meshCIDR := netip.MustParsePrefix(second.MeshCIDR)
	mainSeq := bucketSeq(t, m)

	run := func(name string, cfg config.Config, words ...string) {
		t.Helper()
		path, err := other.WriteConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		code, out := checkConfigIn(t, alpha, agentBin, path)
		if len(words) == 0 {
			if code != 0 {
				t.Errorf("%s: --check-config exited %d, want 0:\n%s", name, code, out)
			}
			return
		}
		t.Logf("%s: --check-config: exit %d: %s", name, code, strings.TrimSpace(out))
		if code != 1 {
			t.Errorf("%s: --check-config exited %d, want 1:\n%s", name, code, out)
		}
		code, stderr := runBadAgent(t, alpha, agentBin, path, filepath.Join(dir, "agent.sock"), false)
		t.Logf("%s: agent: exit %d: %s", name, code, strings.TrimSpace(stderr))
		if code != 1 {
			t.Errorf("%s: the agent exited %d, want 1:\n%s", name, code, stderr)
		}
		for _, w := range words {
			if !strings.Contains(out, w) || !strings.Contains(stderr, w) {
				t.Errorf("%s: --check-config or the agent does not say %q:\n%s\n%s", name, w, out, stderr)
			}
		}
	}
	run("the same mesh_cidr as alpha's first mesh", second,
		"mesh_cidr overlaps", meshCIDR.String()+" takes in", "route "+meshCIDR.String()+" on interface "+alpha.DevName, "another mesh_cidr")

	// An address inside the mesh on an interface that is no mesh's (a
	// bridge: the dummy module may be missing).
	elsewhere := pickOtherMesh(t, meshCIDR)
	bridge := "ikb" + strings.TrimPrefix(other.DevName, "ik")
	inside := netip.PrefixFrom(elsewhere.Addr().Next(), 64)
	ctx := context.Background()
	for _, args := range [][]string{
		{"link", "add", bridge, "type", "bridge"}, {"addr", "add", inside.String(), "dev", bridge}, {"link", "set", bridge, "up"},
	} {
		if out, err := alpha.Exec(ctx, "ip", args...); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	moved := second
	moved.MeshCIDR = elsewhere.String()
	moved.PrivateAddress = moveInto(elsewhere, other.PrivateAddress).String()
	run("an address inside the mesh on a bridge", moved,
		"mesh_cidr overlaps", elsewhere.String()+" takes in", "address "+inside.String()+" on interface "+bridge, "another mesh_cidr")
	if out, err := alpha.Exec(ctx, "ip", "link", "del", bridge); err != nil {
		t.Fatalf("ip link del %s: %v\n%s", bridge, err, out)
	}
	run("another mesh_cidr, clear of both", moved)

	// Nothing was written: the second mesh's buckets were never made, and
	// the first's did not move.
	js, err := jetstream.New(m.bucket.Conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ikto-second", bucket.LiveBucket("ikto-second")} {
		if _, err := js.KeyValue(ctx, name); !errors.Is(err, jetstream.ErrBucketNotFound) {
			t.Errorf("bucket %s after the refused agents: %v, want it never made", name, err)
		}
	}
	if seq := bucketSeq(t, m); seq != mainSeq {
		t.Errorf("bucket %s moved from %d to %d", bucketName, mainSeq, seq)
	}
	if err := harness.CheckMesh(hosts); err != nil {
		t.Errorf("the first mesh: %v", err)
	}
}

// checkConfigIn runs ikto-agent --check-config -c path in h's namespace and
// returns its exit code and output.
func checkConfigIn(t *testing.T, h *harness.Host, agent, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), badConfigTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.Namespace, agent, "--check-config", "-c", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("ikto-agent --check-config: %v", err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// pickOtherMesh is an fdXX::/16 other than mesh.
func pickOtherMesh(t *testing.T, mesh netip.Prefix) netip.Prefix {
	t.Helper()
	b := mesh.Addr().As16()
	b[1]++
	if b[1] == 0 || b[1] == 0x10 {
		b[1] += 2
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 16).Masked()
}

// moveInto is addr moved into the /16 mesh: mesh's first two bytes, addr's
// others.
func moveInto(mesh netip.Prefix, addr netip.Addr) netip.Addr {
	b, m := addr.As16(), mesh.Addr().As16()
	b[0], b[1] = m[0], m[1]
	return netip.AddrFrom16(b)
}
