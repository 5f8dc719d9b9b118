package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestConfigurationReferenceListsEveryField: docs/configuration.md's table
// names every field the agent reads, and no other.
func TestConfigurationReferenceListsEveryField(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
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
	typ := reflect.TypeFor[Config]()
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
