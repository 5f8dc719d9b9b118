package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreateAndLoadPrivateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wg.key")
	k, err := CreatePrivateKey(path)
	if err != nil {
		t.Fatalf("CreatePrivateKey(%s): %v", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", mode)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(before)); got != k.String() {
		t.Errorf("key file holds %q, want the returned key %q", got, k)
	}

	loaded, err := LoadPrivateKey(path)
	if err != nil {
		t.Fatalf("LoadPrivateKey(%s): %v", path, err)
	}
	if loaded != k {
		t.Errorf("LoadPrivateKey = %s, want %s", loaded, k)
	}

	// A second create must neither succeed nor touch the file.
	if _, err := CreatePrivateKey(path); !errors.Is(err, ErrKeyExists) || !strings.Contains(err.Error(), path) {
		t.Errorf("second CreatePrivateKey(%s) = %v, want ErrKeyExists naming the file", path, err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("second CreatePrivateKey changed the key file")
	}

	// An existing file of any content is never overwritten.
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CreatePrivateKey(other); !errors.Is(err, ErrKeyExists) {
		t.Errorf("CreatePrivateKey over a file = %v, want ErrKeyExists", err)
	}
	if data, _ := os.ReadFile(other); string(data) != "precious" {
		t.Errorf("CreatePrivateKey overwrote %s: now %q", other, data)
	}

	noDir := filepath.Join(dir, "no", "such", "dir", "wg.key")
	if _, err := CreatePrivateKey(noDir); err == nil || errors.Is(err, ErrKeyExists) || !strings.Contains(err.Error(), noDir) {
		t.Errorf("CreatePrivateKey(%s) = %v, want an error naming the path", noDir, err)
	}
	if _, err := os.Stat(noDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CreatePrivateKey left %s behind after failing", noDir)
	}

	// `wg genkey` output, with its trailing newline, loads too.
	genkey := filepath.Join(dir, "genkey")
	if err := os.WriteFile(genkey, []byte("  "+k.String()+"\n\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadPrivateKey(genkey); err != nil || got != k {
		t.Errorf("LoadPrivateKey(padded key) = %s, %v; want %s", got, err, k)
	}
}

func TestLoadPrivateKeyErrors(t *testing.T) {
	fx := newFiles(t)
	tests := []struct {
		name  string
		path  string
		words []string
	}{
		{"missing", filepath.Join(fx.dir, "nope.key"), []string{"nope.key", "does not exist", "ikto-init --private-key-path"}},
		{"world-readable", fx.worldKey, []string{"world.key", "group or others", "chmod 600 " + fx.worldKey}},
		{"not a key", fx.notKey, []string{"not.key", "base64 WireGuard key"}},
		{"zero key", fx.zeroKey, []string{"all-zero"}},
		{"directory", fx.dir, []string{"not a regular file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadPrivateKey(tt.path)
			if err == nil {
				t.Fatalf("LoadPrivateKey(%s): want an error", tt.path)
			}
			for _, w := range tt.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Group-readable is as bad as world-readable.
	if err := os.Chmod(fx.key, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPrivateKey(fx.key); err == nil || !strings.Contains(err.Error(), "0640") {
		t.Errorf("LoadPrivateKey(mode 0640) = %v, want a mode error", err)
	}
}

func TestWriteSecretFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ikto.json")
	if err := WriteSecretFile(path, []byte("one"), false); err != nil {
		t.Fatalf("create: %v", err)
	}
	checkFile(t, path, "one", 0o600)

	// Without replace an existing file is never touched.
	err := WriteSecretFile(path, []byte("two"), false)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("create over an existing file: %v, want fs.ErrExist", err)
	}
	checkFile(t, path, "one", 0o600)

	// With replace the file is swapped in whole and comes back 0600.
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := WriteSecretFile(path, []byte("three"), true); err != nil {
		t.Fatalf("replace: %v", err)
	}
	checkFile(t, path, "three", 0o600)
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}

	if err := WriteSecretFile(filepath.Join(dir, "missing", "x"), nil, true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("replace in a missing directory: %v, want fs.ErrNotExist", err)
	}
}

func checkFile(t *testing.T, path, want string, mode fs.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != mode {
		t.Errorf("%s: mode %v, want %v", path, got, mode)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != want {
		t.Errorf("%s holds %q, want %q", path, data, want)
	}
}
