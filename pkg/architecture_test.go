package pkg_test

import (
	"bufio"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The README's architecture section states who imports whom; this test holds
// it to the code, so the arrows a newcomer reads are the arrows there are.

const repoPath = "github.com/ikto-mesh/ikto/"

// TestREADMEImportArrows compares the README's "Who imports whom" block with
// the imports of every non-test Go file under pkg/ and cmd/.
func TestREADMEImportArrows(t *testing.T) {
	documented := readmeArrows(t, "../README.md")
	actual := codeArrows(t, "..")
	if diff := cmp.Diff(documented, actual); diff != "" {
		t.Errorf("README.md's \"Who imports whom\" differs from the code (-README +code); update the README:\n%s", diff)
	}
}

// readmeArrows parses the first code block after the "Who imports whom"
// heading: one line "a, b → c, d" each, a parenthesised remark ignored,
// "nothing of ours" meaning no arrow.
func readmeArrows(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	remark := regexp.MustCompile(`\([^)]*\)`)
	arrows := map[string][]string{}
	var heading, inBlock bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "### Who imports whom"):
			heading = true
			continue
		case !heading:
			continue
		case strings.HasPrefix(line, "```"):
			if inBlock {
				return arrows
			}
			inBlock = true
			continue
		case !inBlock:
			continue
		}
		from, to, ok := strings.Cut(remark.ReplaceAllString(line, ""), "→")
		if !ok {
			t.Fatalf("%s: %q in the import block has no arrow", path, line)
		}
		var targets []string
		if to = strings.TrimSpace(to); to != "nothing of ours" {
			targets = names(to)
		}
		for _, src := range names(from) {
			if _, dup := arrows[src]; dup {
				t.Errorf("%s: %s has two lines in the import block", path, src)
			}
			arrows[src] = sorted(targets)
		}
	}
	t.Fatalf("%s: no code block after a \"### Who imports whom\" heading", path)
	return nil
}

func names(list string) []string {
	var out []string
	for n := range strings.SplitSeq(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// codeArrows reads the imports of the repository's own packages: a package
// under pkg/ is named by its first path element (pkg/wgdev/backend is wgdev),
// a binary by its name, plugins/sdk and internal/testkit whole.
func codeArrows(t *testing.T, root string) map[string][]string {
	t.Helper()
	sets := map[string]map[string]bool{}
	eachImport(t, root, func(src, imp string) {
		if sets[src] == nil {
			sets[src] = map[string]bool{}
		}
		if !strings.HasPrefix(imp, repoPath) {
			return
		}
		if dst := node(strings.TrimPrefix(imp, repoPath)); dst != src {
			sets[src][dst] = true
		}
	})
	arrows := map[string][]string{}
	for src, set := range sets {
		var to []string
		for dst := range set {
			to = append(to, dst)
		}
		arrows[src] = sorted(to)
	}
	return arrows
}

// TestOnlyBucketSpeaksNATS holds the README's other claim: no product code
// outside pkg/bucket imports nats.go (nkeys and jwt, the credential formats,
// are not the protocol).
func TestOnlyBucketSpeaksNATS(t *testing.T) {
	eachImport(t, "..", func(src, imp string) {
		if src != "bucket" && strings.HasPrefix(imp, "github.com/nats-io/nats.go") {
			t.Errorf("%s imports %s: only pkg/bucket may speak NATS; add what it needs to bucket.Mesh", src, imp)
		}
	})
}

// eachImport calls fn with the part of the repository (node) and the import
// path of every import in a non-test Go file under pkg/ and cmd/.
func eachImport(t *testing.T, root string, fn func(src, imp string)) {
	t.Helper()
	for _, top := range []string{"pkg", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			src := node(filepath.ToSlash(filepath.Dir(rel)))
			file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range file.Imports {
				fn(src, strings.Trim(imp.Path.Value, `"`))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// node names the part of the repository a directory belongs to.
func node(dir string) string {
	parts := strings.Split(dir, "/")
	switch {
	case parts[0] == "pkg" && len(parts) > 2 && parts[1] == "internal":
		return "internal/" + parts[2] // pkg/internal/wgtest
	case parts[0] == "pkg" && len(parts) > 1, parts[0] == "cmd" && len(parts) > 1:
		return parts[1]
	case len(parts) > 1:
		return parts[0] + "/" + parts[1] // plugins/sdk, internal/testkit
	}
	return dir
}

func sorted(s []string) []string {
	if s == nil {
		return []string{}
	}
	slices.Sort(s)
	return s
}
