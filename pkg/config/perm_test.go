package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// otherUID owns what an attacker would: neither root nor the agent.
const otherUID = 4242

// tree builds files and directories under a fresh t.TempDir(): the root of
// every case, itself only root's (or the test user's) to write, in a sticky
// /tmp. Paths are relative to it; modes are set with chmod, past the umask.
type tree struct {
	t    *testing.T
	base string
}

func newTree(t *testing.T) *tree { return &tree{t: t, base: t.TempDir()} }

func (tr *tree) path(rel string) string { return filepath.Join(tr.base, rel) }

func (tr *tree) dir(rel string, mode os.FileMode) *tree {
	tr.t.Helper()
	p := tr.path(rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

func (tr *tree) file(rel string, mode os.FileMode) *tree {
	tr.t.Helper()
	p := tr.path(rel)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o700); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

func (tr *tree) link(rel, target string) *tree {
	tr.t.Helper()
	if err := os.Symlink(target, tr.path(rel)); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

// chown gives rel (a link itself, not its target) to uid; only root can.
func (tr *tree) chown(rel string, uid int) *tree {
	tr.t.Helper()
	if os.Geteuid() != 0 {
		tr.t.Skip("chown to another user needs root")
	}
	if err := os.Lchown(tr.path(rel), uid, -1); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

func TestCheckHookPath(t *testing.T) {
	self := os.Geteuid()
	tests := []struct {
		name  string
		build func(*tree) string // returns the hook path, relative
		uid   int                // the agent's; 0 means the test's own
		words []string           // in the error, with {base} for the tree's root; none: accepted
	}{
		{name: "root's file in root's directory", build: func(tr *tree) string {
			tr.dir("bin", 0o755).file("bin/hook", 0o755)
			return "bin/hook"
		}},
		{name: "read-only file", build: func(tr *tree) string {
			tr.dir("bin", 0o555).file("bin/hook", 0o500)
			return "bin/hook"
		}},
		{name: "file group-writable", build: func(tr *tree) string {
			tr.dir("bin", 0o755).file("bin/hook", 0o775)
			return "bin/hook"
		}, words: []string{"file {base}/bin/hook is writable by group or others", "mode 0775", "chmod go-w {base}/bin/hook"}},
		{name: "file world-writable", build: func(tr *tree) string {
			tr.dir("bin", 0o755).file("bin/hook", 0o757)
			return "bin/hook"
		}, words: []string{"file {base}/bin/hook is writable", "mode 0757"}},
		{name: "directory world-writable", build: func(tr *tree) string {
			tr.dir("bin", 0o777).file("bin/hook", 0o755)
			return "bin/hook"
		}, words: []string{"directory {base}/bin is writable by group or others", "mode 0777", "chmod go-w {base}/bin"}},
		{name: "directory group-writable, higher up", build: func(tr *tree) string {
			tr.dir("opt", 0o775).dir("opt/ikto", 0o755).file("opt/ikto/hook", 0o755)
			return "opt/ikto/hook"
		}, words: []string{"directory {base}/opt is writable", "mode 0775"}},
		{name: "sticky world-writable directory, root's file in it", build: func(tr *tree) string {
			tr.dir("tmp", os.ModeSticky|0o777).file("tmp/hook", 0o755)
			return "tmp/hook"
		}},
		{name: "sticky directory, root's directory below", build: func(tr *tree) string {
			tr.dir("tmp", os.ModeSticky|0o777).dir("tmp/d", 0o700).file("tmp/d/hook", 0o755)
			return "tmp/d/hook"
		}},
		{name: "sticky directory, another user's file in it", build: func(tr *tree) string {
			tr.dir("tmp", os.ModeSticky|0o777).file("tmp/hook", 0o755).chown("tmp/hook", otherUID)
			return "tmp/hook"
		}, words: []string{"file {base}/tmp/hook is owned by uid 4242", "chown root {base}/tmp/hook"}},
		{name: "sticky directory, another user's directory below", build: func(tr *tree) string {
			tr.dir("tmp", os.ModeSticky|0o777).dir("tmp/d", 0o755).file("tmp/d/hook", 0o755).chown("tmp/d", otherUID)
			return "tmp/d/hook"
		}, words: []string{"directory {base}/tmp/d is owned by uid 4242"}},
		{name: "sticky directory, the agent's own file in it", uid: otherUID, build: func(tr *tree) string {
			tr.dir("tmp", os.ModeSticky|0o777).file("tmp/hook", 0o755).chown("tmp/hook", otherUID)
			return "tmp/hook"
		}},
		{name: "sticky but group-writable file", build: func(tr *tree) string {
			tr.dir("tmp", os.ModeSticky|0o777).file("tmp/hook", os.ModeSticky|0o775)
			return "tmp/hook"
		}, words: []string{"file {base}/tmp/hook is writable"}},
		{name: "another user's directory", build: func(tr *tree) string {
			tr.dir("home", 0o755).file("home/hook", 0o755).chown("home", otherUID)
			return "home/hook"
		}, words: []string{"directory {base}/home is owned by uid 4242, not root;", "chown root {base}/home"}},
		{name: "another user's file", build: func(tr *tree) string {
			tr.dir("bin", 0o755).file("bin/hook", 0o755).chown("bin/hook", otherUID)
			return "bin/hook"
		}, words: []string{"file {base}/bin/hook is owned by uid 4242"}},
		{name: "the agent's own directory and file", uid: otherUID, build: func(tr *tree) string {
			tr.dir("home", 0o755).file("home/hook", 0o755).chown("home", otherUID).chown("home/hook", otherUID)
			return "home/hook"
		}},
		{name: "a third user's file, agent not root", uid: otherUID, build: func(tr *tree) string {
			tr.dir("home", 0o755).file("home/hook", 0o755).chown("home/hook", otherUID+1)
			return "home/hook"
		}, words: []string{"owned by uid 4243, not root or the agent's uid 4242"}},

		// Links: every directory passed on the way, and where it ends.
		{name: "link to a file in a world-writable directory", build: func(tr *tree) string {
			tr.dir("bin", 0o755).dir("srv", 0o777).file("srv/hook", 0o755).link("bin/hook", tr.path("srv/hook"))
			return "bin/hook"
		}, words: []string{"{base}/bin/hook (resolves to {base}/srv/hook)", "directory {base}/srv is writable"}},
		{name: "link in a world-writable directory to a good file", build: func(tr *tree) string {
			tr.dir("bin", 0o755).dir("drop", 0o777).file("bin/hook", 0o755).link("drop/hook", tr.path("bin/hook"))
			return "drop/hook"
		}, words: []string{"(resolves to {base}/bin/hook)", "directory {base}/drop is writable"}},
		{name: "directory link to a world-writable directory", build: func(tr *tree) string {
			tr.dir("srv", 0o777).file("srv/hook", 0o755).link("lib", "srv")
			return "lib/hook"
		}, words: []string{"(resolves to {base}/srv/hook)", "directory {base}/srv is writable"}},
		{name: "relative links with .. to a good file", build: func(tr *tree) string {
			tr.dir("a/b", 0o755).dir("c", 0o755).file("c/hook", 0o755).link("a/b/l1", "../l2").link("a/l2", "../c/hook")
			return "a/b/l1"
		}},
		{name: "link owned by another user", build: func(tr *tree) string {
			tr.dir("bin", 0o755).file("bin/real", 0o755).link("bin/hook", "real").chown("bin/hook", otherUID)
			return "bin/hook"
		}, words: []string{"symbolic link {base}/bin/hook is owned by uid 4242"}},

		// Not an executable file at all.
		{name: "missing", build: func(tr *tree) string {
			tr.dir("bin", 0o755)
			return "bin/hook"
		}, words: []string{"{base}/bin/hook does not exist", "install the hook"}},
		{name: "missing directory", build: func(*tree) string { return "nodir/hook" },
			words: []string{"{base}/nodir does not exist"}},
		{name: "a directory", build: func(tr *tree) string {
			tr.dir("bin", 0o755)
			return "bin"
		}, words: []string{"{base}/bin is a directory, not an executable file"}},
		{name: "link loop", build: func(tr *tree) string {
			tr.dir("bin", 0o755).link("bin/a", "b").link("bin/b", "a")
			return "bin/a"
		}, words: []string{"more than 40 symbolic links"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(t)
			path := tr.path(tt.build(tr))
			uid := self
			if tt.uid != 0 {
				uid = tt.uid
			}
			err := checkHookPath(path, uid)
			if len(tt.words) == 0 {
				if err != nil {
					t.Fatalf("checkHookPath(%s, uid %d) = %v, want nil", path, uid, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkHookPath(%s, uid %d) = nil, want an error", path, uid)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, path) || strings.Contains(msg, "\n") {
				t.Errorf("error %q does not start with the configured path %s on one line", msg, path)
			}
			for _, w := range tt.words {
				if w = strings.ReplaceAll(w, "{base}", tr.base); !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			unsafe := strings.Contains(msg, "owned by") || strings.Contains(msg, "writable")
			if errors.Is(err, ErrUnsafePermissions) != unsafe {
				t.Errorf("errors.Is(%q, ErrUnsafePermissions) = %v, want %v", msg, !unsafe, unsafe)
			}
		})
	}
}

// The resolved path is the one filepath.EvalSymlinks finds, so the message
// and the check agree on where a hook is.
func TestCheckHookPathNamesEvalSymlinks(t *testing.T) {
	tr := newTree(t)
	tr.dir("real", 0o777).file("real/hook", 0o755).link("l", "real").link("l2", "l/hook")
	want, err := filepath.EvalSymlinks(tr.path("l2"))
	if err != nil {
		t.Fatal(err)
	}
	err = checkHookPath(tr.path("l2"), os.Geteuid())
	if err == nil || !strings.Contains(err.Error(), "(resolves to "+want+")") {
		t.Fatalf("checkHookPath = %v, want it to name %s", err, want)
	}
}

// Validate refuses a hook no one but root may write only at the path
// hooks[N].path names, and a config whose syntax is wrong fails on that
// before any hook's file is looked at.
func TestValidateHookPath(t *testing.T) {
	fx := newFiles(t)
	tr := newTree(t)
	tr.dir("open", 0o777).file("open/hook", 0o755)
	hooks := func(paths ...string) map[string]any {
		m := goodV6(fx)
		var hs []any
		for i, p := range paths {
			hs = append(hs, map[string]any{"name": "h" + strconv.Itoa(i), "path": p})
		}
		m["hooks"] = hs
		return m
	}
	c, err := parseMap(t, hooks(fx.hook, tr.path("open/hook")))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	checkFieldError(t, err, "hooks[1].path", tr.path("open"), "writable by group or others", "mode 0777", "chmod go-w")
	if !errors.Is(err, ErrUnsafePermissions) {
		t.Errorf("Validate = %v, want it to wrap ErrUnsafePermissions", err)
	}

	m := hooks(tr.path("open/hook"), fx.hook)
	m["hooks"].([]any)[1].(map[string]any)["timeout"] = "soon"
	if c, err = parseMap(t, m); err != nil {
		t.Fatal(err)
	}
	checkFieldError(t, c.Validate(), "hooks[1].timeout", "duration")
}

// Every secret file a config names is refused, naming the field, the file,
// its mode and the fix, when group or others may read or write it.
func TestValidateSecretModes(t *testing.T) {
	fx := newFiles(t)
	tests := []struct {
		mode   os.FileMode
		access string // "" when the mode is accepted
	}{
		{0o600, ""},
		{0o400, ""},
		{0o700, ""},
		{0o640, "is readable by group or others"},
		{0o604, "is readable by group or others"},
		{0o644, "is readable by group or others"},
		{0o620, "is writable by group or others"},
		{0o602, "is writable by group or others"},
		{0o660, "is readable and writable by group or others"},
		{0o666, "is readable and writable by group or others"},
		{0o610, "is accessible by group or others"},
	}
	fields := []struct {
		field, fixture string
		set            func(m map[string]any, path string)
	}{
		{"private_key_path", fx.key, func(m map[string]any, p string) { m["private_key_path"] = p }},
		{"nats_creds", fx.creds, func(m map[string]any, p string) { m["nats_creds"] = p }},
		{"nats_tls_key", fx.tlsKey, func(m map[string]any, p string) {
			m["nats_tls_cert"], m["nats_tls_key"] = fx.cert, p
		}},
	}
	for _, f := range fields {
		data, err := os.ReadFile(f.fixture)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			t.Run(f.field+"/"+tt.mode.String(), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "secret")
				if err := os.WriteFile(path, data, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tt.mode); err != nil {
					t.Fatal(err)
				}
				m := goodV6(fx)
				f.set(m, path)
				c, err := parseMap(t, m)
				if err != nil {
					t.Fatal(err)
				}
				err = c.Validate()
				if tt.access == "" {
					if err != nil {
						t.Fatalf("Validate with %s mode %04o: %v", f.field, tt.mode, err)
					}
					return
				}
				mode := "mode 0" + strconv.FormatUint(uint64(tt.mode), 8)
				checkFieldError(t, err, f.field, path+" "+tt.access, mode, "run chmod 600 "+path)
				if !errors.Is(err, ErrUnsafePermissions) || strings.Contains(err.Error(), "\n") {
					t.Errorf("Validate = %q, want one line wrapping ErrUnsafePermissions", err)
				}
			})
		}
	}
}
