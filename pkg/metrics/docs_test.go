package metrics

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// TestDocsListEveryMetric: docs/deploying.md's list of metrics names every
// ikto_ metric the agent exports, and no other.
func TestDocsListEveryMetric(t *testing.T) {
	doc, err := os.ReadFile("../../docs/deploying.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := slices.Compact(slices.Sorted(slices.Values(
		regexp.MustCompile(`ikto_[a-z_]+`).FindAllString(string(doc), -1))))

	m := NewAgent()
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
