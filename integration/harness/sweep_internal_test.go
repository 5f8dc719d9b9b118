package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A run that died before Close left a namespace, a link and a state file
// naming them; the next NewNetwork removes all three.
func TestSweepStale(t *testing.T) {
	if err := CheckPrerequisites(); err != nil {
		if os.Getenv("IKTO_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	suffix, err := randomSuffix()
	if err != nil {
		t.Fatal(err)
	}
	ns, link := "ikto-"+suffix+"-dead", "ikd"+suffix
	// A process that has exited stands in for the dead owner.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if netnsExists(ns) {
			_, _ = ip("netns", "del", ns)
		}
		if linkExists(link) {
			_, _ = ip("link", "del", link)
		}
	})
	for _, args := range [][]string{{"netns", "add", ns}, {"link", "add", link, "type", "bridge"}} {
		if _, err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	s := &stateFile{
		path: filepath.Join(stateDir, suffix+".json"),
		data: stateData{
			Owner:      stateProcess{PID: dead.Process.Pid, Start: "1"},
			Namespaces: []string{ns},
			Links:      []string{link},
		},
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.write(); err != nil {
		t.Fatal(err)
	}

	n, err := NewNetwork()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if netnsExists(ns) || linkExists(link) {
		t.Errorf("after the sweep: namespace %s exists %v, link %s exists %v", ns, netnsExists(ns), link, linkExists(link))
	}
	if _, err := os.Stat(s.path); !os.IsNotExist(err) {
		t.Errorf("state file %s: %v, want it removed", s.path, err)
	}
}
