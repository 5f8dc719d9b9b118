package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// docsFlag is the hidden flag with which `make package` has each binary
// write its own man pages and shell completions: they come from the cobra
// commands themselves, so they cannot drift from the flags.
const docsFlag = "generate-docs"

// ManSection is an extra section of a binary's man page, after its
// description and options.
type ManSection struct {
	Title string // e.g. "EXIT STATUS"
	Body  string // markdown, as go-md2man reads it
}

// EnableDocs gives root the hidden flag --generate-docs DIR: run with it,
// the binary writes its man pages and shell completions into DIR and exits 0
// instead of doing its work (see WriteDocs for the layout). extra is added
// to root's man page.
//
// Call it once root's RunE is set; it wraps it.
func EnableDocs(root *cobra.Command, extra ...ManSection) {
	var dir string
	root.Flags().StringVar(&dir, docsFlag, "", "write man pages and shell completions into `DIR` and exit")
	_ = root.Flags().MarkHidden(docsFlag)
	run := root.RunE
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if dir == "" {
			return run(cmd, args)
		}
		return WriteDocs(root, dir, extra...)
	}
}

// WriteDocs writes root's documentation into dir:
//
//	man/NAME.1 (and NAME-SUBCOMMAND.1 for each subcommand)
//	bash/NAME   zsh/_NAME   fish/NAME.fish
//
// The man pages' date is $SOURCE_DATE_EPOCH when set (reproducible builds),
// else today.
func WriteDocs(root *cobra.Command, dir string, extra ...ManSection) error {
	name := root.Name()
	for _, sub := range []string{"man", "bash", "zsh", "fish"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return fmt.Errorf("--%s: %w", docsFlag, err)
		}
	}
	// The flag that asked for the docs is hidden, so it stays out of them;
	// so does cobra's footer naming itself.
	var disable func(*cobra.Command)
	disable = func(c *cobra.Command) {
		c.DisableAutoGenTag = true
		for _, s := range c.Commands() {
			disable(s)
		}
	}
	disable(root)
	long := root.Long
	if root.Long == "" {
		root.Long = root.Short
	}
	for _, s := range extra {
		root.Long += "\n\n# " + s.Title + "\n" + strings.TrimSpace(s.Body) + "\n"
	}
	header := &doc.GenManHeader{
		Title:   strings.ToUpper(name),
		Section: "1",
		Source:  "ikto " + Version,
		Manual:  "ikto manual",
	}
	err := doc.GenManTree(root, header, filepath.Join(dir, "man"))
	root.Long = long
	if err != nil {
		return fmt.Errorf("man pages of %s: %w", name, err)
	}
	for _, gen := range []struct {
		path  string
		write func(string) error
	}{
		{filepath.Join(dir, "bash", name), func(p string) error { return root.GenBashCompletionFileV2(p, true) }},
		{filepath.Join(dir, "zsh", "_"+name), root.GenZshCompletionFile},
		{filepath.Join(dir, "fish", name+".fish"), func(p string) error { return root.GenFishCompletionFile(p, true) }},
	} {
		if err := gen.write(gen.path); err != nil {
			return fmt.Errorf("completion %s: %w", gen.path, err)
		}
	}
	return nil
}

// ExitStatus is the EXIT STATUS man section: the codes every ikto binary
// shares, then a binary's own (markdown paragraphs such as "**3** ...").
func ExitStatus(own ...string) ManSection {
	codes := []string{
		"**0** success",
		"**1** a runtime or configuration error; the message names the field, file, key or server that is wrong",
		"**2** a usage error: a wrong flag, value or argument",
	}
	return ManSection{Title: "EXIT STATUS", Body: strings.Join(append(codes, own...), "\n\n")}
}
