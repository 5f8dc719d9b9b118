package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// The docs' examples, run as written. A user copies them; a test that runs
// something else proves nothing about them.

// TestDocsHookExamples runs docs/hooks.md's two hook examples — the exec
// hook's jq script and the Go hook built from its source — in an agent
// sandboxed the way the shipped unit sandboxes it (ProtectSystem=strict with
// the unit's writable directories), and checks what they wrote.
func TestDocsHookExamples(t *testing.T) {
	requireTool(t, "jq", "jq")
	requireTool(t, "unshare", "util-linux")
	doc := readRepoFile(t, "docs/hooks.md")
	script := codeBlock(t, doc, "sh", "#!/bin/sh")
	goHook := codeBlock(t, doc, "go", "package main")

	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo", "charlie")
	alpha := hosts[0]
	for _, h := range hosts[1:] {
		m.start(h)
	}

	scriptPath := harnesstest.WriteFile(t, filepath.Join(alpha.Dir, "on-mesh-change"), []byte(script), 0o755)
	execBin, err := m.bins.Path(harness.ExecHookBinary)
	if err != nil {
		t.Fatal(err)
	}
	execCfg, _ := json.Marshal(map[string]any{"command": []string{scriptPath, "--quiet"}, "timeout": "5s"})
	cfg := m.config(alpha)
	cfg.Hooks = []config.HookConfig{
		{Name: "notify", Path: execBin, Config: execCfg},
		{Name: "prefixes", Path: buildDocHook(t, goHook)},
	}
	run := filepath.Join(alpha.Dir, "run-ikto") // the sandbox's /run/ikto
	if err := os.Mkdir(run, 0o750); err != nil {
		t.Fatal(err)
	}
	agent := startSandboxed(t, m, alpha, cfg, run)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sandboxed agent's log:\n%s", agent.LogTail(60))
		}
	})
	m.waitConverged(hosts)

	// The jq script: one "ADDRESS NAME.mesh" line per peer.
	var wantHosts []string
	for _, h := range hosts[1:] {
		wantHosts = append(wantHosts, fmt.Sprintf("%s %s.mesh", h.PrivateAddress, h.Name))
	}
	// The Go hook: one "PREFIX NAME" line per peer.
	var wantPrefixes []string
	for _, h := range hosts[1:] {
		wantPrefixes = append(wantPrefixes, fmt.Sprintf("%s %s", h.Prefix(), h.Name))
	}
	testkit.Eventually(t, 30*time.Second, "the examples' files", func() error {
		if agent.Exited() {
			return testkit.Permanent(fmt.Errorf("the sandboxed agent exited:\n%s", agent.LogTail(30)))
		}
		if err := linesAre(filepath.Join(run, "hosts"), wantHosts); err != nil {
			return fmt.Errorf("exec hook example: %w", err)
		}
		return linesAre(filepath.Join(run, alpha.DevName+".prefixes"), wantPrefixes)
	})
}

// TestDocsLeastPrivilegeConf: the nats-server configuration
// docs/nats-permissions.md shows is the one TestLeastPrivilege runs.
func TestDocsLeastPrivilegeConf(t *testing.T) {
	shown := codeBlock(t, readRepoFile(t, "docs/nats-permissions.md"), "", "# ikto: least-privilege")
	if tested := readRepoFile(t, "integration/harness/least-privilege.conf"); shown != tested {
		t.Errorf("docs/nats-permissions.md's configuration differs from integration/harness/least-privilege.conf, which the tests run; copy the file into the docs")
	}
}

// TestUnitSandboxBites shows the sandbox the docs test runs hooks in is the
// unit's: a path the unit leaves writable is, a path beside it is not. (The
// hook examples once wrote /run/ikto-hosts, which the unit forbids.)
func TestUnitSandboxBites(t *testing.T) {
	requireTool(t, "unshare", "util-linux")
	n := harnesstest.Network(t)
	h := harnesstest.AddHost(t, n, "alpha")
	run := filepath.Join(h.Dir, "run-ikto")
	if err := os.Mkdir(run, 0o750); err != nil {
		t.Fatal(err)
	}
	probe := "probe-" + n.Suffix
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	argv := sandboxArgv(t, run, "/bin/sh", "-c", fmt.Sprintf(
		"echo ok > /run/ikto/%[1]s || exit 10; echo no > /run/ikto-%[1]s && exit 11; echo no > /etc/ikto-%[1]s && exit 12; exit 0", probe))
	out, err := h.Exec(ctx, argv[0], argv[1:]...)
	for _, stray := range []string{"/run/ikto-" + probe, "/etc/ikto-" + probe} {
		_ = os.Remove(stray)
	}
	if err != nil {
		t.Fatalf("in the unit's sandbox: %v\n%s\n(exit 10: /run/ikto not writable; 11: /run writable; 12: /etc writable)", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(run, probe)); err != nil || string(b) != "ok\n" {
		t.Errorf("what the sandbox wrote to /run/ikto is not in the host's run directory: %q, %v", b, err)
	}
}

// startSandboxed starts h's agent with cfg inside the unit's sandbox, run
// standing in for /run/ikto.
func startSandboxed(t *testing.T, m *mesh, h *harness.Host, cfg config.Config, run string) *harness.Process {
	t.Helper()
	cfgPath, err := h.WriteConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := m.bins.Path(harness.AgentBinary)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Start("ikto-agent-sandboxed", sandboxArgv(t, run, bin, "-c", cfgPath, "-s", h.SocketPath, "--log-level", "debug")...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sandboxArgv is argv run the way dist/systemd/ikto-agent.service runs the
// agent as far as files go: in its own mount namespace, every file system
// read-only (ProtectSystem=strict) but /dev, /proc and /sys, the unit's
// RuntimeDirectory= under /run and StateDirectory= under /var/lib, and /tmp
// and /var/tmp (PrivateTmp=yes gives it a writable /tmp of its own). run is
// bound on /run/ikto, so each test host has its own. unshare execs argv in
// place, so the PID the harness tracks is the program's.
func sandboxArgv(t *testing.T, run string, argv ...string) []string {
	t.Helper()
	unit := readRepoFile(t, "dist/systemd/ikto-agent.service")
	if got := unitSetting(unit, "ProtectSystem"); got != "strict" {
		t.Fatalf("the unit's ProtectSystem is %q: this sandbox models strict; update it", got)
	}
	writable := []string{"/tmp", "/var/tmp"}
	for _, d := range strings.Fields(unitSetting(unit, "RuntimeDirectory")) {
		writable = append(writable, "/run/"+d)
	}
	for _, d := range strings.Fields(unitSetting(unit, "StateDirectory")) {
		writable = append(writable, "/var/lib/"+d)
	}
	for _, d := range strings.Fields(unitSetting(unit, "ReadWritePaths")) {
		writable = append(writable, strings.TrimPrefix(d, "-"))
	}
	if !slices.Contains(writable, "/run/ikto") {
		t.Fatalf("the unit gives no RuntimeDirectory=ikto: the socket and the hook examples need /run/ikto")
	}
	// Bind each writable directory on itself so that it is a mount of its own,
	// then make every other mount read-only. A directory that does not exist
	// on this machine is left out, as systemd would make it and bind it.
	script := `set -eu
run=$1; shift
for d in ` + strings.Join(writable, " ") + `; do
	if [ "$d" = /run/ikto ]; then mount --bind "$run" /run/ikto; continue; fi
	[ -d "$d" ] && mount --bind "$d" "$d"
done
awk '{print $5}' /proc/self/mountinfo | while read -r m; do
	case "$m" in /dev|/dev/*|/proc|/proc/*|/sys|/sys/*) continue ;; esac
	keep=
	for d in ` + strings.Join(writable, " ") + `; do [ "$m" = "$d" ] && keep=1; done
	[ -n "$keep" ] || mount -o remount,bind,ro "$m" 2>/dev/null || true
done
exec "$@"`
	ensureDir(t, "/run/ikto")
	return append([]string{"unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sandbox", run}, argv...)
}

// ensureDir makes dir for the test's mount namespaces to bind onto, and
// removes it afterwards if the test made it.
func ensureDir(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); err == nil {
		return
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
}

// unitSetting is the value of a systemd unit's setting (the last one wins).
func unitSetting(unit, key string) string {
	var v string
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		if k, val, ok := strings.Cut(sc.Text(), "="); ok && strings.TrimSpace(k) == key {
			v = strings.TrimSpace(val)
		}
	}
	return v
}

// buildDocHook builds the Go hook src (a docs example) against this
// checkout's plugins/sdk, as a hook author's module would.
func buildDocHook(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	sdk, err := filepath.Abs("../plugins/sdk")
	if err != nil {
		t.Fatal(err)
	}
	gomod := "module example.com/dochook\n\ngo 1.26.0\n\nrequire github.com/ikto-mesh/ikto/plugins/sdk v0.0.0\n\nreplace github.com/ikto-mesh/ikto/plugins/sdk => " + sdk + "\n"
	harnesstest.WriteFile(t, filepath.Join(dir, "go.mod"), []byte(gomod), 0o644)
	harnesstest.WriteFile(t, filepath.Join(dir, "go.sum"), []byte(readRepoFile(t, "plugins/sdk/go.sum")), 0o644)
	harnesstest.WriteFile(t, filepath.Join(dir, "main.go"), []byte(src), 0o644)
	bin := filepath.Join(dir, "ikto-hook-doc")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build docs/hooks.md's Go example: %v\n%s", err, out)
	}
	return bin
}

// readRepoFile is a file of this checkout by its path from the root.
func readRepoFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// codeBlock is the body of the first fenced block of lang in doc whose first
// line starts with first; a fence indented (in a list item) has its body
// dedented as much.
func codeBlock(t *testing.T, doc, lang, first string) string {
	t.Helper()
	re := regexp.MustCompile("(?ms)^([ \t]*)```" + regexp.QuoteMeta(lang) + "\n(.*?)^[ \t]*```")
	for _, m := range re.FindAllStringSubmatch(doc, -1) {
		body := m[2]
		if indent := m[1]; indent != "" {
			lines := strings.Split(body, "\n")
			for i, l := range lines {
				lines[i] = strings.TrimPrefix(l, indent)
			}
			body = strings.Join(lines, "\n")
		}
		if strings.HasPrefix(body, first) {
			return body
		}
	}
	t.Fatalf("no ```%s block starting %q in the docs", lang, first)
	return ""
}

// linesAre is nil when the file holds exactly want, one line each, in any
// order.
func linesAre(path string, want []string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s holds %q, want %q", path, got, want)
	}
	return nil
}

// TestREADMEDeploySteps follows the README's "Deploy it" on two hosts as a
// new operator would: its ikto-init command, then each line of "Run it", and
// pings the address `ikto-admin ip` gives from the other host. What differs
// from the page is only what a test machine must change: this network's
// addresses and NATS server (which has no users, so no --nats-creds), the
// host's directory for /etc/ikto and its socket, a device name of its own,
// and the harness starting the agent where the page says systemctl.
func TestREADMEDeploySteps(t *testing.T) {
	readme := readRepoFile(t, "README.md")
	deploy := section(t, readme, "## Deploy it")
	initCmd := shellWords(t, codeBlock(t, deploy, "sh", "ikto-init"))
	runIt := codeBlock(t, deploy, "sh", "ikto-agent")

	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo")
	addrs := map[string]netip.Addr{}
	for _, h := range hosts {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		etc := func(p string) string { return strings.Replace(p, "/etc/ikto/", h.Dir+"/", 1) }
		var argv []string
		for i := 0; i < len(initCmd); i++ {
			switch w := initCmd[i]; w {
			case "--advertise-address":
				argv, i = append(argv, w, h.Addr.String()), i+1
			case "--nats-url":
				argv, i = append(argv, w, m.natsURL()), i+1
			case "--nats-creds":
				i++ // the test's server has no users
			default:
				argv = append(argv, etc(w))
			}
		}
		argv = append(argv, "--wg-dev-name", h.DevName)
		out, err := h.Exec(ctx, m.binPath(t, argv[0]), argv[1:]...)
		if err != nil {
			t.Fatalf("%s: the README's ikto-init: %v\n%s", h.Name, err, out)
		}
		sock := []string{"-s", h.SocketPath}
		for _, line := range strings.Split(strings.TrimSpace(runIt), "\n") {
			line, _, _ = strings.Cut(line, "#")
			words := strings.Fields(line)
			switch strings.Join(words[:2], " ") {
			case "ikto-agent -c":
				var args []string
				for _, w := range words[1:] {
					args = append(args, etc(w))
				}
				if out, err := h.Exec(ctx, m.binPath(t, words[0]), args...); err != nil {
					t.Fatalf("%s: %s: %v\n%s", h.Name, line, err, out)
				}
			case "systemctl enable":
				// The unit's ExecStart, from dist/systemd.
				if _, err := h.Start("ikto-agent", m.binPath(t, "ikto-agent"), "-c", filepath.Join(h.Dir, "ikto.json"), "-s", h.SocketPath); err != nil {
					t.Fatal(err)
				}
			case "ikto-admin status":
				testkit.Eventually(t, 30*time.Second, h.Name+": "+line, func() error {
					out, err := h.Exec(ctx, m.binPath(t, words[0]), append(words[1:], sock...)...)
					if err != nil {
						return fmt.Errorf("%v\n%s", err, out)
					}
					return nil
				})
			case "ikto-admin ip":
				out, err := h.Exec(ctx, m.binPath(t, words[0]), append(words[1:], sock...)...)
				if err != nil {
					t.Fatalf("%s: %s: %v\n%s", h.Name, line, err, out)
				}
				a, err := netip.ParseAddr(strings.TrimSpace(out))
				if err != nil {
					t.Fatalf("%s: %s printed %q, not an address", h.Name, line, out)
				}
				addrs[h.Name] = a
			default:
				t.Fatalf("the README's %q is not a step this test knows; teach it", line)
			}
		}
	}
	testkit.Eventually(t, 30*time.Second, "bravo to ping alpha's `ikto-admin ip`", func() error {
		_, err := hosts[1].Ping(context.Background(), addrs["alpha"])
		return err
	})
}

// binPath is the path of the built binary name.
func (m *mesh) binPath(t *testing.T, name string) string {
	t.Helper()
	p, err := m.bins.Path(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// section is doc from heading to the next heading of its level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("no %q heading", heading)
	}
	rest := doc[i+1+len(heading):]
	level := heading[:strings.IndexByte(heading, ' ')+1]
	if j := strings.Index(rest, "\n"+level); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// docArgs is the arguments of doc's first ikto-admin command (a sh block)
// with the subcommand sub, as a test runs it: optional parts in brackets are
// left out unless their flag is in keep (then taken without the brackets),
// and each word that starts with a key of subst starts with its value
// instead, the longest key first (the page's paths and servers for the
// test's). A placeholder left ("…", "<…>") fails the test: the page shows
// no command to run there.
func docArgs(t *testing.T, doc, sub string, keep []string, subst map[string]string) []string {
	t.Helper()
	keys := slices.SortedFunc(maps.Keys(subst), func(a, b string) int { return len(b) - len(a) })
	re := regexp.MustCompile("(?ms)^```sh\n(.*?)^```")
	for _, m := range re.FindAllStringSubmatch(doc, -1) {
		block := regexp.MustCompile(`(?m)\s+#.*$`).ReplaceAllString(m[1], "")
		block = regexp.MustCompile(`\[([^\]]*)\]`).ReplaceAllStringFunc(block, func(opt string) string {
			inner := strings.Trim(opt, "[]")
			if slices.Contains(keep, strings.Fields(inner)[0]) {
				return inner
			}
			return ""
		})
		words := strings.Fields(strings.ReplaceAll(block, "\\\n", " "))
		if len(words) == 0 || words[0] != "ikto-admin" || !slices.Contains(words, sub) {
			continue
		}
		args := shellWords(t, strings.Join(words[1:], " "))
		for i, w := range args {
			for _, from := range keys {
				if strings.HasPrefix(w, from) {
					args[i] = subst[from] + strings.TrimPrefix(w, from)
					break
				}
			}
			if strings.ContainsAny(args[i], "…<>") {
				t.Fatalf("the docs' ikto-admin %s has a placeholder, %q", sub, args[i])
			}
		}
		return args
	}
	t.Fatalf("no ikto-admin %s command in a sh block of the docs", sub)
	return nil
}

// shellWords splits a one-command shell block with continuation lines into
// words; anything a shell would expand or quote is refused.
func shellWords(t *testing.T, block string) []string {
	t.Helper()
	if strings.ContainsAny(block, "$`'\"*?;|&<>") {
		t.Fatalf("the command %q needs a shell; this test runs plain words only", block)
	}
	return strings.Fields(strings.ReplaceAll(block, "\\\n", " "))
}

// TestDocsOperatingCommands runs docs/operating.md's ikto-admin commands and
// docs/deploying.md's curl commands on a two-host mesh, in the order the
// page lists them: list, list -o json, evict (of bravo, for real), unrevoke
// (of bravo's key), prune and health (dry and read-only), status; then the
// socket's /v1/status and the metrics over TCP. What differs from the page:
// alpha's config and socket for /etc/ikto/ikto.json and /run/ikto/ikto.sock,
// bravo's address and key for the page's examples, optional parts taken
// where a dry run keeps the mesh, and "metrics_listen" set as the page says.
func TestDocsOperatingCommands(t *testing.T) {
	requireTool(t, "curl", "curl")
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo")
	alpha, bravo := hosts[0], hosts[1]
	deploying := readRepoFile(t, "docs/deploying.md")
	curls := strings.Split(strings.TrimSpace(codeBlock(t, deploying, "sh", "curl")), "\n")
	metricsAddr := regexp.MustCompile(`"metrics_listen": "([^"]+)"`).FindStringSubmatch(deploying)
	if metricsAddr == nil {
		t.Fatal(`docs/deploying.md shows no "metrics_listen" to set`)
	}
	cfg := m.config(alpha)
	cfg.MetricsListen = metricsAddr[1]
	agent := m.startWith(alpha, cfg)
	m.start(bravo)
	m.waitConverged(hosts)

	block := codeBlock(t, readRepoFile(t, "docs/operating.md"), "sh", "ikto-admin -c /etc/ikto/ikto.json list")
	subst := strings.NewReplacer("/etc/ikto/ikto.json", agent.ConfigPath, "/run/ikto/ikto.sock", agent.SocketPath,
		"fd10:2082:5bc1::7", bravo.PrivateAddress.String(), "<public-key>", bravo.PublicKey.String())
	ran := 0
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if strings.Contains(line, " | ") {
			continue // a list of commands the next page shows
		}
		// Optional parts: a dry run where the page offers one (prune), the
		// real thing where a later line undoes it (evict, then unrevoke),
		// every other option as shown.
		line = regexp.MustCompile(`\[([^\]]*)\]`).ReplaceAllStringFunc(line, func(opt string) string {
			if strings.HasPrefix(line, "ikto-admin -c /etc/ikto/ikto.json evict") {
				return ""
			}
			return strings.Trim(opt, "[]")
		})
		words := strings.Fields(subst.Replace(line))
		if strings.ContainsAny(strings.Join(words, " "), "<>…") {
			t.Fatalf("docs/operating.md's %q keeps a placeholder this test does not fill", line)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := alpha.Exec(ctx, m.binPath(t, words[0]), words[1:]...)
		cancel()
		if err != nil {
			t.Errorf("docs/operating.md: %s: %v\n%s", strings.Join(words, " "), err, out)
			continue
		}
		ran++
		t.Logf("ran %s", strings.Join(words[1:], " "))
		if slices.Contains(words, "json") && !json.Valid([]byte(out)) {
			t.Errorf("%s printed no JSON:\n%s", strings.Join(words, " "), out)
		}
		if slices.Contains(words, "evict") {
			if code := waitExit(t, m.agents[bravo.Name]); code != 4 {
				t.Errorf("bravo's agent exited %d after the page's evict, want 4", code)
			}
		}
	}
	for _, line := range curls {
		line, _, _ = strings.Cut(line, "#")
		words := strings.Fields(subst.Replace(line))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := alpha.Exec(ctx, words[0], append([]string{"-sSf"}, words[1:]...)...)
		cancel()
		switch {
		case err != nil:
			t.Errorf("docs/deploying.md: %s: %v\n%s", strings.Join(words, " "), err, out)
		case strings.Contains(line, "/v1/status") && !json.Valid([]byte(out)):
			t.Errorf("%s printed no JSON:\n%s", strings.Join(words, " "), out)
		case strings.Contains(line, "/metrics") && !strings.Contains(out, "ikto_peers_desired"):
			t.Errorf("%s printed no ikto metrics:\n%.500s", strings.Join(words, " "), out)
		}
	}
	if ran != 7 {
		t.Errorf("ran %d of docs/operating.md's ikto-admin commands, want the 7 it shows", ran)
	}
}
