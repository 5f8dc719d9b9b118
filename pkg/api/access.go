package api

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// DefaultGroup is the group whose members may read the admin socket besides
// root: the package creates it (a system group), and an operator adds the
// people who may run `ikto-admin status` without root to it. Every route of
// the socket is a read (Serve refuses any other), and what changes the mesh
// goes through NATS with an operator's credentials, so the group reads and
// nothing more.
const DefaultGroup = "ikto"

// SocketGroup looks up the group, by name or number, that may read the
// socket; "" means root alone (nil). When the group does not exist and
// optional is set (the default group, not one the operator named), the
// socket is root's alone too.
func SocketGroup(name string, optional bool) (*user.Group, error) {
	if name == "" {
		return nil, nil
	}
	g, err := user.LookupGroup(name)
	if _, numeric := strconv.Atoi(name); err != nil && numeric == nil {
		g, err = user.LookupGroupId(name)
	}
	var unknown user.UnknownGroupError
	var unknownID user.UnknownGroupIdError
	switch {
	case err == nil:
		return g, nil
	case optional && (errors.As(err, &unknown) || errors.As(err, &unknownID)):
		return nil, nil
	}
	return nil, fmt.Errorf("admin socket group: %w; create it (groupadd --system %s)", err, name)
}

// grant gives the group g read access to the socket at path: the group
// owns it, mode 0660. Without a group it stays root's alone, mode 0600.
func grant(path string, g *user.Group) error {
	if g == nil {
		return os.Chmod(path, 0o600)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("group %s: gid %q: %w", g.Name, g.Gid, err)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return err
	}
	return os.Chmod(path, 0o660)
}

// deniedHint is what to do when the socket at path refused a connection for
// want of permission: join the group that owns it, or, when the socket is
// root's alone, have the agent open it to a group.
func deniedHint(path string) string {
	owner := func(p string) (string, bool) {
		st, err := os.Stat(p)
		if err != nil {
			return "", false
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok || sys.Gid == 0 {
			return "", ok
		}
		id := strconv.FormatUint(uint64(sys.Gid), 10)
		if g, err := user.LookupGroupId(id); err == nil {
			return g.Name, true
		}
		return id, true
	}
	// A directory the user may not enter hides the socket; its group
	// is the one to join then.
	group, ok := owner(path)
	if !ok {
		group, ok = owner(filepath.Dir(path))
	}
	if ok && group == "" {
		return fmt.Sprintf("only root may read it: run as root, or start the agent with a group that may (the %s group, which the package creates, or --socket-group NAME)", DefaultGroup)
	}
	if group == "" {
		group = DefaultGroup
	}
	return fmt.Sprintf("only root and the members of group %s may read it: add this user to the group (sudo usermod -aG %s $USER, then log in again) or run as root", group, group)
}
