package integration_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
)

// TestVersionScript runs mk/version.sh, the one place ikto's version is
// computed, in scratch repositories: a tag on HEAD is the version, else
// CHANGELOG.md's top heading names it and the commits since the last tag
// (or the root) and the commit follow; the Debian form sorts the same way.
func TestVersionScript(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "mk", "version.sh"))
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		changelog string // the top heading, written before the commit
		commit    bool
		tag       string
		dirty     bool
	}
	for _, tc := range []struct {
		name      string
		steps     []step
		want, deb string // HASH stands for HEAD's short hash
		wantErr   []string
	}{
		{
			name:  "no tag",
			steps: []step{{changelog: "## Unreleased (0.4.0)", commit: true}, {commit: true}, {commit: true}},
			want:  "0.4.0-dev.3+gHASH", deb: "0.4.0~dev.3+gHASH",
		},
		{
			name:  "no tag, uncommitted changes",
			steps: []step{{changelog: "## Unreleased (0.4.0)", commit: true}, {dirty: true}},
			want:  "0.4.0-dev.1+gHASH.dirty", deb: "0.4.0~dev.1+gHASH.dirty",
		},
		{
			name:  "tagged release",
			steps: []step{{changelog: "## Unreleased (0.4.0)", commit: true}, {changelog: "## 0.4.0 — 2026-12-07", commit: true, tag: "v0.4.0"}},
			want:  "0.4.0", deb: "0.4.0",
		},
		{
			name:  "tagged release, uncommitted changes",
			steps: []step{{changelog: "## 0.4.0", commit: true, tag: "v0.4.0", dirty: true}},
			want:  "0.4.0+dirty", deb: "0.4.0+dirty",
		},
		{
			name:  "tagged pre-release",
			steps: []step{{changelog: "## Unreleased (0.5.0)", commit: true, tag: "v0.5.0-rc.1"}},
			want:  "0.5.0-rc.1", deb: "0.5.0~rc.1",
		},
		{
			name: "after a release",
			steps: []step{{changelog: "## 0.4.0", commit: true, tag: "v0.4.0"},
				{changelog: "## Unreleased (0.4.1)", commit: true}, {commit: true}},
			want: "0.4.1-dev.2+gHASH", deb: "0.4.1~dev.2+gHASH",
		},
		{
			name:  "after a pre-release",
			steps: []step{{changelog: "## Unreleased (0.5.0)", commit: true, tag: "v0.5.0-rc.1"}, {commit: true}},
			want:  "0.5.0-dev.1+gHASH", deb: "0.5.0~dev.1+gHASH",
		},
		{
			name:    "tag and changelog disagree",
			steps:   []step{{changelog: "## Unreleased (0.5.0)", commit: true, tag: "v0.4.0"}},
			wantErr: []string{"tagged v0.4.0", "names 0.5.0"},
		},
		{
			name:    "changelog names a released version",
			steps:   []step{{changelog: "## 0.4.0", commit: true, tag: "v0.4.0"}, {commit: true}},
			wantErr: []string{"v0.4.0 is released", "open the next version's heading"},
		},
		{
			name:    "changelog names no version",
			steps:   []step{{changelog: "## Unreleased", commit: true}},
			wantErr: []string{`"## Unreleased" names no version`, "## Unreleased (0.4.0)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "mk"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "mk", "version.sh"), script, 0o755); err != nil {
				t.Fatal(err)
			}
			git := func(args ...string) string {
				t.Helper()
				cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				return strings.TrimSpace(string(out))
			}
			git("init", "-q")
			heading := ""
			for i, s := range tc.steps {
				if s.changelog != "" {
					heading = s.changelog
				}
				if s.commit {
					body := "# Changelog\n\n" + heading + "\n\n- change " + string(rune('a'+i)) + "\n\n## 0.3.0\n"
					if err := os.WriteFile(filepath.Join(dir, "CHANGELOG.md"), []byte(body), 0o644); err != nil {
						t.Fatal(err)
					}
					git("add", "-A")
					git("commit", "-q", "-m", "step")
				}
				if s.tag != "" {
					git("tag", s.tag)
				}
				if s.dirty {
					if err := os.WriteFile(filepath.Join(dir, "CHANGELOG.md"), []byte("# Changelog\n\n"+heading+"\n\n- uncommitted\n"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			run := func(args ...string) (string, error) {
				out, err := exec.Command(filepath.Join(dir, "mk", "version.sh"), args...).CombinedOutput()
				return strings.TrimSpace(string(out)), err
			}
			got, err := run()
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("version.sh printed %q; want it to fail", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(got, w) {
						t.Errorf("version.sh failed with %q; want it to say %q", got, w)
					}
				}
				return
			}
			hash := git("rev-parse", "--short", "HEAD")
			if want := strings.ReplaceAll(tc.want, "HASH", hash); err != nil || got != want {
				t.Errorf("version.sh = %q (%v), want %q", got, err, want)
			}
			if got, err := run("--deb"); err != nil || got != strings.ReplaceAll(tc.deb, "HASH", hash) {
				t.Errorf("version.sh --deb = %q (%v), want %q", got, err, strings.ReplaceAll(tc.deb, "HASH", hash))
			}
		})
	}
}

// TestOneVersion builds the package as `make package` does, from this
// checkout, and checks that every binary and hook in it, and the binaries
// the other tests ran (IKTO_BIN_DIR), answer --version and -v with
// mk/version.sh's version; that the .deb carries it in Debian's form, the man
// pages name it, and CHANGELOG.md's top heading names its release; and that
// the package installs the documentation and a man page per command.
func TestOneVersion(t *testing.T) {
	requireTool(t, "dpkg-deb", "dpkg")
	requireTool(t, "make", "make")
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	version := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(root, "mk", "version.sh"), args...).Output()
		if err != nil {
			t.Fatalf("mk/version.sh %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	want, wantDeb := version(), version("--deb")

	tmp := t.TempDir()
	bin, out := filepath.Join(tmp, "bin"), filepath.Join(tmp, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	mk := exec.CommandContext(ctx, "make", "-s", "-C", root, "package", "BIN="+bin, "PKG_OUT="+out)
	if b, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, b)
	}

	dirs := []string{bin}
	if env := os.Getenv("IKTO_BIN_DIR"); env != "" {
		dirs = append(dirs, env)
	}
	for _, dir := range dirs {
		for _, name := range harness.AllBinaries {
			for _, flag := range []string{"--version", "-v"} {
				b, err := exec.Command(filepath.Join(dir, name), flag).Output()
				if err != nil {
					t.Errorf("%s/%s %s: %v", dir, name, flag, err)
					continue
				}
				if f := strings.Fields(string(b)); len(f) < 2 || f[0] != name || f[1] != want {
					t.Errorf("%s/%s %s printed %q; want %q, version %s (mk/version.sh; rebuild stale binaries with make build)", dir, name, flag, b, name, want)
				}
			}
		}
	}

	debs, _ := filepath.Glob(filepath.Join(out, "ikto_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make package left %v in %s; want one .deb", debs, out)
	}
	deb := debs[0]
	if b, err := exec.Command("dpkg-deb", "-f", deb, "Version").Output(); err != nil || strings.TrimSpace(string(b)) != wantDeb {
		t.Errorf("%s: Version %q (%v), want %q", deb, b, err, wantDeb)
	}
	if !strings.HasPrefix(filepath.Base(deb), "ikto_"+wantDeb+"_") {
		t.Errorf("package file %s does not carry version %s", filepath.Base(deb), wantDeb)
	}

	changelog, err := os.ReadFile(filepath.Join(root, "CHANGELOG.md"))
	if err != nil {
		t.Fatal(err)
	}
	release, _, _ := strings.Cut(strings.SplitN(want, "+", 2)[0], "-")
	for _, line := range strings.Split(string(changelog), "\n") {
		if strings.HasPrefix(line, "## ") {
			if !strings.Contains(line, release) {
				t.Errorf("CHANGELOG.md's top heading %q does not name %s, the release of version %s", line, release, want)
			}
			break
		}
	}

	b, err := exec.Command("dpkg-deb", "-c", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -c %s: %v", deb, err)
	}
	contents := string(b)
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	wantFiles := []string{"README.md", "CHANGELOG.md", "copyright"}
	for _, d := range docs {
		wantFiles = append(wantFiles, "docs/"+filepath.Base(d))
	}
	for _, f := range wantFiles {
		if !strings.Contains(contents, " ./usr/share/doc/ikto/"+f+"\n") {
			t.Errorf("the package lacks /usr/share/doc/ikto/%s", f)
		}
	}
	for _, page := range []string{"ikto-agent.1.gz", "ikto-init.1.gz", "ikto-admin.1.gz", "ikto-admin-evict.1.gz", "ikto-admin-status.1.gz"} {
		if !strings.Contains(contents, " ./usr/share/man/man1/"+page+"\n") {
			t.Errorf("the package lacks the man page %s", page)
		}
	}
	pages, _ := filepath.Glob(filepath.Join(out, "root", "usr", "share", "man", "man1", "*.1.gz"))
	for _, p := range pages {
		if !strings.Contains(contents, " ./usr/share/man/man1/"+filepath.Base(p)+"\n") {
			t.Errorf("the package lacks %s", p)
		}
		b, err := exec.Command("gzip", "-dc", p).Output()
		if err != nil {
			t.Fatalf("gzip -dc %s: %v", p, err)
		}
		if !strings.Contains(string(b), `"ikto `+want+`"`) {
			t.Errorf("man page %s does not name version %s", filepath.Base(p), want)
		}
	}
}
