package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ikto-mesh/ikto/pkg/atomicfile"
)

// MaxFileSize bounds what Load reads: a 10,000-host mesh is about 2.5 MB, so
// anything near this is not a snapshot.
const MaxFileSize = 64 << 20

// Path is where the snapshot of device lives in dir: one file per device, so
// two agents on one machine (two meshes) never share one.
func Path(dir, device string) string {
	return filepath.Join(dir, device+".json")
}

// Save writes s to path atomically: a temporary file in the same directory
// (mode 0600), fsynced, renamed over path, and the directory fsynced, so a
// crash at any point leaves either the old snapshot or the new one, never a
// torn file. The directory is created (mode 0700) when missing.
func Save(path string, s *Snapshot) error {
	data, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return fmt.Errorf("save snapshot %s: encode: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	// The file is 0600 from its first moment: the peers are never readable
	// by others.
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	return nil
}

// Load reads the snapshot at path. A missing file matches fs.ErrNotExist; a
// file that does not parse, is too large, or could have been written by
// someone else (not owned by this user, or writable by group or others)
// matches ErrCorrupt. Load does not check what the records say; Peers does.
func Load(path string) (*Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	defer f.Close()
	if err := checkOwner(f); err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("load snapshot %s: %w: larger than %d bytes", path, ErrCorrupt, MaxFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var s Snapshot
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w: %w", path, ErrCorrupt, err)
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return nil, fmt.Errorf("load snapshot %s: %w: trailing data after the JSON object", path, ErrCorrupt)
	}
	return &s, nil
}

// checkOwner refuses a file another user could have planted or edited: the
// peers in it would be configured before NATS has a say.
func checkOwner(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file", ErrCorrupt)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%w: mode %04o lets group or others write it", ErrCorrupt, st.Mode().Perm())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: owned by uid %d, not by this agent's uid %d", ErrCorrupt, sys.Uid, os.Geteuid())
	}
	return nil
}

// Remove deletes the snapshot at path; a missing file is not an error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove snapshot %s: %w", path, err)
	}
	return nil
}
