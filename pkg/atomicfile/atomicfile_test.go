package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWholeWithItsMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ikto.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, "new", 0o600)
	if err := Write(path, []byte("newer"), 0o640); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, "newer", 0o640)
	checkNoLeftovers(t, dir, 1)
}

func TestCreateNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wg.key")
	if err := Create(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Create(path, []byte("second"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over an existing file = %v, want fs.ErrExist", err)
	}
	checkFile(t, path, "first", 0o600)
	checkNoLeftovers(t, dir, 1)
}

func TestWriteIntoMissingDirectoryFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone", "f")
	err := Write(path, []byte("x"), 0o600)
	var pathErr *fs.PathError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pathErr) || pathErr.Path != path {
		t.Errorf("Write into a missing directory = %v, want fs.ErrNotExist naming %s", err, path)
	}
}

func checkFile(t *testing.T, path, want string, mode os.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Errorf("%s = %q, %v; want %q", path, got, err, want)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != mode {
		t.Errorf("%s mode = %v, %v; want %v", path, st.Mode().Perm(), err, mode)
	}
}

func checkNoLeftovers(t *testing.T, dir string, files int) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != files {
		t.Errorf("%s holds %d entries (%v), want %d: a temporary file was left", dir, len(entries), err, files)
	}
}
