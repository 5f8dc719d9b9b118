package natsctx

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Context is a nats CLI context as ikto read it: the files
// $XDG_CONFIG_HOME/nats/context/NAME.json (default ~/.config/nats/...),
// with the selected one named in .../nats/context.txt.
type Context struct {
	Name string // empty when no context applies
	Path string
	Settings
}

// maxContextFile bounds what is read of a context file: real ones are a
// few hundred bytes.
const maxContextFile = 1 << 20

// Dir is the nats CLI's configuration directory: $XDG_CONFIG_HOME/nats, or
// $HOME/.config/nats. It is empty when neither variable is set.
func Dir(getenv func(string) string) string {
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nats")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "nats")
	}
	return ""
}

// LoadContext reads the context name, else the one $NATS_CONTEXT names,
// else the selected one. No context at all (none named, none selected) is
// not an error: it returns a Context with an empty Name. A context that is
// named or selected but cannot be read, or that sets something ikto cannot
// honour, is an error naming the file and the field.
func LoadContext(name string, getenv func(string) string) (Context, error) {
	dir := Dir(getenv)
	how := "--context " + name
	if name == "" {
		name, how = getenv(EnvContext), EnvContext+"="+getenv(EnvContext)
	}
	if name == "" && dir != "" {
		sel := filepath.Join(dir, "context.txt")
		b, err := os.ReadFile(sel)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return Context{}, nil
		case err != nil:
			return Context{}, fmt.Errorf("nats context: %w", err)
		}
		name, how = strings.TrimSpace(string(b)), "selected in "+sel
	}
	if name == "" {
		return Context{}, nil
	}
	if name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return Context{}, fmt.Errorf("nats context %q (%s) is not a context name", name, how)
	}
	if dir == "" {
		return Context{}, fmt.Errorf("nats context %s (%s): neither XDG_CONFIG_HOME nor HOME is set, so there is no context directory", name, how)
	}
	c := Context{Name: name, Path: filepath.Join(dir, "context", name+".json")}
	data, err := readContextFile(c.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return Context{}, fmt.Errorf("nats context %s (%s): %s does not exist; `nats context ls` lists the contexts", name, how, c.Path)
	}
	if err != nil {
		return Context{}, fmt.Errorf("nats context %s: %w", name, err)
	}
	c.Settings, err = parseContext(data, getenv("HOME"))
	if err != nil {
		return Context{}, fmt.Errorf("nats context %s (%s): %w", name, c.Path, err)
	}
	return c, nil
}

func readContextFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxContextFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxContextFile {
		return nil, fmt.Errorf("%s is larger than %d bytes; is it a nats context?", path, maxContextFile)
	}
	return data, nil
}
