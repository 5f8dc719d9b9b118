package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/atomicfile"
)

// ErrKeyExists is returned by CreatePrivateKey when the file is already there.
var ErrKeyExists = errors.New("key file exists")

// LoadPrivateKey reads a WireGuard private key (base64, as `wg genkey` writes
// it). The file must be closed to group and others (checkSecretMode).
func LoadPrivateKey(path string) (wgtypes.Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return wgtypes.Key{}, fmt.Errorf("key file %s does not exist; create it with ikto-init --private-key-path %s", path, path)
		}
		return wgtypes.Key{}, fmt.Errorf("key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return wgtypes.Key{}, fmt.Errorf("key file %s is not a regular file (it is a %s); give the path of the key file itself", path, fileKind(st.Mode()))
	}
	if err := checkSecretMode("key file", path, st.Mode()); err != nil {
		return wgtypes.Key{}, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrPermission) {
		return wgtypes.Key{}, fmt.Errorf("key file %s cannot be read by this user (uid %d): %w; run ikto-agent as root or give the file to its user (chown)", path, os.Geteuid(), err)
	}
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("key file %s: %w", path, err)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("key file %s does not hold a base64 WireGuard key (%w); it must hold one key as `wg genkey` prints it", path, err)
	}
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, fmt.Errorf("key file %s holds the all-zero key", path)
	}
	return k, nil
}

// CreatePrivateKey writes a fresh private key to path with mode 0600. It never
// overwrites: an existing file gives ErrKeyExists.
func CreatePrivateKey(path string) (wgtypes.Key, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("generate key: %w", err)
	}
	if err := atomicfile.Create(path, []byte(k.String()+"\n"), 0o600); err != nil {
		if errors.Is(err, os.ErrExist) {
			return wgtypes.Key{}, fmt.Errorf("%s: %w", path, ErrKeyExists)
		}
		return wgtypes.Key{}, fmt.Errorf("create key file: %w", err)
	}
	return k, nil
}

// ReadSecret reads a file that holds a secret (an operator key), refusing
// one open to group or others as LoadPrivateKey does.
func ReadSecret(what, path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if err := checkSecretMode(what, path, st.Mode()); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return data, nil
}

// WriteSecretFile writes data to path with mode 0600: a configuration, a key
// or a creds file that ikto-init or ikto-admin hands to an agent.
//
// Without replace it never replaces a file: O_EXCL closes the race with any
// earlier check, and an existing file gives an error matching fs.ErrExist.
// With replace it swaps the file in atomically, so a reader never sees half a
// file and a file that was group-readable comes back 0600.
//
// The errors are the os package's, which name the file; the caller says
// which flag or step wrote it.
func WriteSecretFile(path string, data []byte, replace bool) error {
	if replace {
		return atomicfile.Write(path, data, 0o600)
	}
	return atomicfile.Create(path, data, 0o600)
}
