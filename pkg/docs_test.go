package pkg_test

import (
	"bufio"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/metrics"
)

// What the docs state about the code, held to the code: the README's import
// arrows, the configuration reference's fields, the metrics list.

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

// TestConfigurationReferenceListsEveryField: docs/configuration.md's table
// names every field the agent reads, and no other.
func TestConfigurationReferenceListsEveryField(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	field := regexp.MustCompile("`([a-z0-9_]+)`")
	var documented []string
	for line := range strings.SplitSeq(string(doc), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		for _, m := range field.FindAllStringSubmatch(cells[1], -1) {
			documented = append(documented, m[1])
		}
	}
	var fields []string
	typ := reflect.TypeFor[config.Config]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		fields = append(fields, name)
	}
	slices.Sort(documented)
	slices.Sort(fields)
	if diff := cmp.Diff(fields, documented); diff != "" {
		t.Errorf("docs/configuration.md's table and the config's fields differ (-code +docs):\n%s", diff)
	}
}

// TestDocsListEveryMetric: docs/deploying.md's list of metrics names every
// ikto_ metric the agent exports, and no other.
func TestDocsListEveryMetric(t *testing.T) {
	doc, err := os.ReadFile("../docs/deploying.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := slices.Compact(slices.Sorted(slices.Values(
		regexp.MustCompile(`ikto_[a-z_]+`).FindAllString(string(doc), -1))))

	m := metrics.NewAgent()
	names := map[string]bool{}
	// Every metric a field holds, labelled or not yet observed.
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		if !v.Type().Field(i).IsExported() {
			continue
		}
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		descs := make(chan *prometheus.Desc, 8)
		go func() { c.Describe(descs); close(descs) }()
		for d := range descs {
			names[fqName.FindStringSubmatch(d.String())[1]] = true
		}
	}
	// And those registered without a field (the heartbeat's age, build info).
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		names[f.GetName()] = true
	}
	var exported []string
	for n := range names {
		if strings.HasPrefix(n, "ikto_") {
			exported = append(exported, n)
		}
	}
	slices.Sort(exported)
	if diff := cmp.Diff(exported, documented); diff != "" {
		t.Errorf("docs/deploying.md's metrics and the agent's differ (-agent +docs):\n%s", diff)
	}
}

// TestDocsLinksResolve: every relative link in the README and docs/ names
// a file that exists and, with an anchor, a heading that file has (GitHub's
// slugs: lower case, punctuation dropped, spaces as hyphens).
func TestDocsLinksResolve(t *testing.T) {
	pages, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, page := range append(pages, "../README.md", "../CHANGELOG.md") {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(text), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := page
			if file != "" {
				path = filepath.Join(filepath.Dir(page), file)
			}
			body, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s links to %s: %v", page, target, err)
				continue
			}
			if anchor != "" && !slices.Contains(slugs(string(body)), anchor) {
				t.Errorf("%s links to %s: %s has no heading with that anchor", page, target, path)
			}
		}
	}
}

// slugs are the anchors GitHub gives the headings of a Markdown page.
func slugs(page string) []string {
	var out []string
	drop := regexp.MustCompile("[^\\p{L}\\p{N} _-]")
	inCode := false
	for line := range strings.SplitSeq(page, "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		out = append(out, strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(heading), ""), " ", "-"))
	}
	return out
}
