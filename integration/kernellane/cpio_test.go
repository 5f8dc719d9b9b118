package kernellane

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The archive unpacks with GNU cpio (when it is installed) into what was
// put in: the same check the kernel's unpacker makes of the format.
func TestCpioUnpacks(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("no cpio to check the archive with")
	}
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	c.Dir("bin")
	c.File("bin/hello", 0o755, []byte("#!/bin/sh\necho hi\n"))
	c.File("odd", 0o644, []byte("12345")) // data needing padding
	c.Dir("dev")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-i", "-d", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	for name, want := range map[string]string{"bin/hello": "#!/bin/sh\necho hi\n", "odd": "12345"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "bin/hello")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("bin/hello mode = %v, %v", st, err)
	}
}
