package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func testRoot(ran *bool) *cobra.Command {
	root := &cobra.Command{
		Use:   "tool",
		Short: "A tool",
		Long:  "tool does things.",
		RunE:  func(*cobra.Command, []string) error { *ran = true; return nil },
	}
	root.Flags().String("config", "", "the config file")
	root.AddCommand(
		&cobra.Command{Use: "list <pattern>", Short: "List things", Long: "list prints the things that match.", Run: func(*cobra.Command, []string) {}},
		&cobra.Command{Use: "secret", Short: "Hidden", Hidden: true, Run: func(*cobra.Command, []string) {}},
	)
	return root
}

func TestEnableDocsWritesManPagesAndCompletions(t *testing.T) {
	var ran bool
	root := testRoot(&ran)
	EnableDocs(root, ExitStatus("**3** three"))
	dir := t.TempDir()
	root.SetArgs([]string{"--generate-docs", dir})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if ran {
		t.Error("--generate-docs also ran the command")
	}
	read := func(rel string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	page := read("man/tool.1")
	for _, want := range []string{`.TH "TOOL" "1"`, "tool does things.", "EXIT STATUS", "three", "config"} {
		if !strings.Contains(page, want) {
			t.Errorf("man/tool.1 lacks %q:\n%s", want, page)
		}
	}
	for _, unwanted := range []string{"generate-docs", "Auto generated"} {
		if strings.Contains(page, unwanted) {
			t.Errorf("man/tool.1 mentions %q", unwanted)
		}
	}
	list := read("man/tool-list.1")
	for _, want := range []string{"List things", "list prints the things that match.", `\fBtool list <pattern> [flags]\fP`} {
		if !strings.Contains(list, want) {
			t.Errorf("man/tool-list.1 lacks %q:\n%s", want, list)
		}
	}
	if c, _, err := root.Find([]string{"list"}); err != nil || c.Use != "list <pattern>" {
		t.Errorf("list's Use is %q after WriteDocs (%v); the escape belongs to the man page only", c.Use, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "man", "tool-secret.1")); err == nil {
		t.Error("a hidden command got a man page")
	}
	for _, f := range []string{"bash/tool", "zsh/_tool", "fish/tool.fish"} {
		if !strings.Contains(read(f), "tool") {
			t.Errorf("%s does not complete tool", f)
		}
	}
	if root.Long != "tool does things." {
		t.Errorf("Long is %q after WriteDocs; the extra sections belong to the man page only", root.Long)
	}
}

func TestEnableDocsKeepsTheCommand(t *testing.T) {
	var ran bool
	root := testRoot(&ran)
	EnableDocs(root)
	var help bytes.Buffer
	root.SetOut(&help)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(help.String(), "generate-docs") {
		t.Errorf("--help shows the hidden flag:\n%s", help.String())
	}
	root = testRoot(&ran) // a fresh one: flag values outlive Execute
	EnableDocs(root)
	root.SetArgs([]string{})
	if err := root.Execute(); err != nil || !ran {
		t.Errorf("without --generate-docs: err %v, ran %v; want the command run", err, ran)
	}
}

// A command without a Long description would get a man page whose
// DESCRIPTION repeats its NAME line: WriteDocs refuses it, naming it.
func TestWriteDocsWantsLongDescriptions(t *testing.T) {
	var ran bool
	root := testRoot(&ran)
	root.AddCommand(&cobra.Command{Use: "show", Short: "Show a thing", Run: func(*cobra.Command, []string) {}})
	err := WriteDocs(root, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "tool show") || !strings.Contains(err.Error(), "Long") {
		t.Errorf("WriteDocs = %v; want an error naming tool show and its missing Long description", err)
	}
}
