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
	restore, err := prepareManPages(root)
	if err != nil {
		restore()
		return err
	}
	long := root.Long
	for _, s := range extra {
		root.Long += "\n\n# " + s.Title + "\n" + strings.TrimSpace(s.Body) + "\n"
	}
	header := &doc.GenManHeader{
		Title:   strings.ToUpper(name),
		Section: "1",
		Source:  "ikto " + Version,
		Manual:  "ikto manual",
	}
	err = doc.GenManTree(root, header, filepath.Join(dir, "man"))
	root.Long = long
	restore()
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

// prepareManPages readies root's command tree for man pages and returns
// what puts it back. The flag that asked for the docs is hidden, so it stays
// out of them; so does cobra's footer naming itself. Every command with a
// page needs a Long description: without one, its DESCRIPTION would repeat
// its NAME line. The pages are markdown turned into roff, where "<arg>" in a
// synopsis would be taken for HTML and vanish; it is escaped.
func prepareManPages(root *cobra.Command) (restore func(), err error) {
	uses := map[*cobra.Command]string{}
	restore = func() {
		for c, use := range uses {
			c.Use = use
		}
	}
	var walk func(*cobra.Command) error
	walk = func(c *cobra.Command) error {
		c.DisableAutoGenTag = true
		paged := c == c.Root() || (c.IsAvailableCommand() && !c.IsAdditionalHelpTopicCommand())
		if !paged {
			return nil
		}
		if c.Long == "" {
			return fmt.Errorf("man page of %s: the command has no Long description, so its DESCRIPTION would repeat its NAME line; give it one", c.CommandPath())
		}
		uses[c] = c.Use
		c.Use = strings.ReplaceAll(c.Use, "<", `\<`)
		for _, s := range c.Commands() {
			if err := walk(s); err != nil {
				return err
			}
		}
		return nil
	}
	return restore, walk(root)
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
