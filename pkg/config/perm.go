package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUnsafePermissions marks a file the agent refuses, as sshd's StrictModes
// does, because a user other than root or the agent's own could read it (a
// secret: a private key, a NATS seed) or replace it (an executable the agent
// runs as root). The error's text names the file, its mode or owner and the fix.
var ErrUnsafePermissions = errors.New("unsafe permissions")

// checkSecretMode refuses a secret file whose mode lets group or others read
// or write it; what names the file in the message ("key file", "file").
func checkSecretMode(what, path string, mode fs.FileMode) error {
	perm := mode.Perm()
	if perm&0o077 == 0 {
		return nil
	}
	access := "accessible"
	switch r, w := perm&0o044 != 0, perm&0o022 != 0; {
	case r && w:
		access = "readable and writable"
	case r:
		access = "readable"
	case w:
		access = "writable"
	}
	return &fileError{err: ErrUnsafePermissions, msg: fmt.Sprintf(
		"%s %s is %s by group or others (mode %04o); run chmod 600 %s", what, path, access, perm, path)}
}

// maxLinks is how many symbolic links one path may pass through: Linux's
// MAXSYMLINKS.
const maxLinks = 40

// checkHookPath refuses a hook executable that a user other than root or uid
// (the agent's) could replace: the file, every directory exec passes through
// on the way to it, and every symbolic link it follows must be owned by root
// or uid, and no file or directory may be writable by group or others. A
// directory that is but has the sticky bit (/tmp) passes: there only an
// entry's owner may rename or remove it, and the entry below is held to the
// owner rule like every other. The message says where the path resolves to
// when that is elsewhere.
func checkHookPath(path string, uid int) error {
	shown := path
	if r, err := filepath.EvalSymlinks(path); err == nil && r != filepath.Clean(path) {
		shown = fmt.Sprintf("%s (resolves to %s)", path, r)
	}
	if err := walkExecutable(path, uid); err != nil {
		return fmt.Errorf("%s: %w", shown, err)
	}
	return nil
}

// walkExecutable resolves the absolute path one component at a time, as the
// kernel does when it executes it, and checks each directory, link and the
// file it reaches with checkStep. Resolving by hand, rather than checking
// only where filepath.EvalSymlinks ends, also covers the directories that
// hold the links: whoever may write one of them may point the link elsewhere.
func walkExecutable(path string, uid int) error {
	cur := "/"
	st, err := lstat(cur)
	if err != nil {
		return err
	}
	if err := checkStep(cur, st, uid); err != nil {
		return err
	}
	rest, links := splitPath(path), 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // cur holds no links: its parent is the real one
			continue
		}
		next := filepath.Join(cur, name)
		if st, err = lstat(next); err != nil {
			return err
		}
		if err := checkStep(next, st, uid); err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return fmt.Errorf("more than %d symbolic links on the way; point the path at the executable itself", maxLinks)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return fmt.Errorf("read link %s: %w", next, err)
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(splitPath(target), rest...)
	}
	if st, err = lstat(cur); err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is a %s, not an executable file; give the path of the hook executable", cur, fileKind(st.Mode()))
	}
	return nil
}

func splitPath(p string) []string { return strings.Split(p, string(filepath.Separator)) }

// lstat is os.Lstat with errors that say what to do.
func lstat(path string) (fs.FileInfo, error) {
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, &fileError{err: err, msg: fmt.Sprintf("%s does not exist; install the hook there or correct the path", path)}
	case errors.Is(err, fs.ErrPermission):
		return nil, &fileError{err: err, msg: fmt.Sprintf("%s cannot be reached by this user (uid %d); check the permissions of its directories", path, os.Geteuid())}
	case err != nil:
		return nil, err
	}
	return st, nil
}

// checkStep refuses one step of an executable's path that a user other
// than root or uid could change: one that such a user owns, or a file or
// directory group or others may write (a sticky directory excepted; see
// checkHookPath). A link's own mode is never used, only its owner.
func checkStep(path string, st fs.FileInfo, uid int) error {
	kind := "file"
	switch {
	case st.IsDir():
		kind = "directory"
	case st.Mode()&fs.ModeSymlink != 0:
		kind = "symbolic link"
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int64(sys.Uid) != int64(uid) {
		allowed := "root"
		if uid != 0 {
			allowed = fmt.Sprintf("root or the agent's uid %d", uid)
		}
		return &fileError{err: ErrUnsafePermissions, msg: fmt.Sprintf(
			"%s %s is owned by uid %d, not %s; run chown root %s", kind, path, sys.Uid, allowed, path)}
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return nil
	}
	sticky := st.IsDir() && st.Mode()&fs.ModeSticky != 0
	if perm := st.Mode().Perm(); perm&0o022 != 0 && !sticky {
		return &fileError{err: ErrUnsafePermissions, msg: fmt.Sprintf(
			"%s %s is writable by group or others (mode %04o); run chmod go-w %s", kind, path, perm, path)}
	}
	return nil
}
