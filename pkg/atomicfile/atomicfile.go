// Package atomicfile writes files so that a reader, or a crash at any
// moment, sees the old content or the new, never part of either: the one way
// ikto's binaries write a file (keys, configs, snapshots, credentials).
package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data: a temporary file in the same directory
// (mode 0600 from its first moment, then perm), fsynced, renamed over path,
// and the directory fsynced so that the rename outlives a crash too. An
// error is an *fs.PathError naming path (never the temporary file).
func Write(path string, data []byte, perm os.FileMode) error {
	return place(path, data, perm, os.Rename)
}

// Create is Write for a path that must not exist: an existing file is an
// error matching fs.ErrExist, and is left as it was.
func Create(path string, data []byte, perm os.FileMode) error {
	return place(path, data, perm, os.Link) // a link fails with EEXIST where a rename replaces
}

// place stages data in a temporary file beside path and puts it there with
// put (rename or link).
func place(path string, data []byte, perm os.FileMode, put func(tmp, path string) error) error {
	if err := stage(path, data, perm, put); err != nil {
		var pathErr *fs.PathError
		var linkErr *os.LinkError
		switch {
		case errors.As(err, &pathErr):
			err = pathErr.Err
		case errors.As(err, &linkErr):
			err = linkErr.Err
		}
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

func stage(path string, data []byte, perm os.FileMode, put func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // what is left of it after a rename or a link
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && perm != 0o600 {
		err = os.Chmod(tmp.Name(), perm)
	}
	if err == nil {
		err = put(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
