// Command recorder is the hook the hook host's tests run as a real plugin
// process. It appends every call it gets, with its PID, as a JSON line to
// calls.jsonl in the directory named by its config {"dir": …}, and misbehaves
// on request: while a file <op>.fail, <op>.hang or <op>.exit exists in that
// directory, calls of op return the file's text as an error, block forever
// (ignoring their deadline), or exit the process with status 3.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/ikto-mesh/ikto/pkg/hook/hooktest"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

type recorder struct {
	mu  sync.Mutex
	dir string
}

func (r *recorder) Configure(_ context.Context, n sdk.Node) error {
	var cfg struct {
		Dir string `json:"dir"`
	}
	if err := json.Unmarshal(n.Config, &cfg); err != nil || cfg.Dir == "" {
		return fmt.Errorf("config %q: want {\"dir\": …}", n.Config)
	}
	r.mu.Lock()
	r.dir = cfg.Dir
	r.mu.Unlock()
	sdk.Logger().Info("recorder configured", "dir", cfg.Dir, "device", n.Device)
	return r.record(hooktest.Call{Op: "configure", Node: &n})
}

func (r *recorder) Apply(_ context.Context, c sdk.Change) error {
	return r.record(hooktest.Call{Op: "apply", Change: &c})
}

func (r *recorder) Stop(context.Context) error {
	return r.record(hooktest.Call{Op: "stop"})
}

// record writes the call, then acts as the control files say.
func (r *recorder) record(c hooktest.Call) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dir == "" {
		return errors.New("called before Configure")
	}
	c.PID = os.Getpid()
	var failure []byte
	for _, act := range []string{"exit", "hang", "fail"} {
		if b, err := os.ReadFile(filepath.Join(r.dir, c.Op+"."+act)); err == nil {
			c.Act, failure = act, b
			break
		}
	}
	line, err := json.Marshal(c)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(r.dir, hooktest.CallsFile), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	switch c.Act {
	case "exit":
		os.Exit(3)
	case "hang":
		select {}
	case "fail":
		return errors.New(string(failure))
	}
	return nil
}

func main() { sdk.Serve(&recorder{}) }
