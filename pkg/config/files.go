package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/nats-io/nkeys"
)

// maxSecretFile bounds what validation reads of a key, creds or TLS file:
// real ones are a few kilobytes.
const maxSecretFile = 1 << 20

// readSmallFile reads a file a config field names, refusing anything but a
// regular file: a directory would fail later with a vaguer error, and
// opening a FIFO would block the agent's start-up forever. A secret file
// (credentials, a private key) must also be closed to group and others
// (checkSecretMode). The errors name the file and say how to fix it.
func readSmallFile(path string, secret bool) ([]byte, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, &fileError{msg: fmt.Sprintf("file %s does not exist", path), err: err}
	case errors.Is(err, fs.ErrPermission):
		return nil, &fileError{err: err, msg: fmt.Sprintf("file %s cannot be reached by this user (uid %d); check the permissions of its directories", path, os.Geteuid())}
	case err != nil:
		return nil, fmt.Errorf("file %s: %w", path, err)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file (it is a %s); give the path of the file itself", path, fileKind(st.Mode()))
	}
	if secret {
		if err := checkSecretMode("file", path, st.Mode()); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrPermission) {
		return nil, &fileError{err: err, msg: fmt.Sprintf("file %s cannot be read by this user (uid %d); run ikto-agent as root or give the file to its user (chown)", path, os.Geteuid())}
	}
	if err != nil {
		return nil, fmt.Errorf("file %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxSecretFile {
		return nil, fmt.Errorf("file %s is larger than %d bytes; is it the right file?", path, maxSecretFile)
	}
	return data, nil
}

// fileError is a file problem stated in full by msg; err is kept for
// errors.Is (fs.ErrNotExist, fs.ErrPermission) without repeating its text.
type fileError struct {
	msg string
	err error
}

func (e *fileError) Error() string { return e.msg }
func (e *fileError) Unwrap() error { return e.err }

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// validateNATSFiles reads the credentials and TLS files the config names and
// checks that they hold what nats.go will need, so that a wrong file stops
// the agent at start-up with the field named, instead of surfacing later as
// a connection error that says nothing about the config.
func (c *Config) validateNATSFiles() error {
	if c.NATSCreds != "" {
		if err := checkCreds(c.NATSCreds); err != nil {
			return &FieldError{Field: "nats_creds", Msg: err.Error(), Err: err}
		}
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		return fieldErr("nats_tls_cert", "nats_tls_cert and nats_tls_key must be set together")
	}
	if c.NATSTLSCA != "" {
		if err := checkCA(c.NATSTLSCA); err != nil {
			return &FieldError{Field: "nats_tls_ca", Msg: err.Error(), Err: err}
		}
	}
	if c.NATSTLSCert == "" {
		return nil
	}
	cert, err := readSmallFile(c.NATSTLSCert, false)
	if err != nil {
		return &FieldError{Field: "nats_tls_cert", Msg: err.Error(), Err: err}
	}
	key, err := readSmallFile(c.NATSTLSKey, true)
	if err != nil {
		return &FieldError{Field: "nats_tls_key", Msg: err.Error(), Err: err}
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return &FieldError{Field: "nats_tls_cert", Err: err, Msg: fmt.Sprintf(
			"%s and nats_tls_key %s are not a PEM certificate and its private key: %v", c.NATSTLSCert, c.NATSTLSKey, err)}
	}
	return nil
}

// checkCreds accepts what nats.UserCredentials will load: a user JWT and the
// user's nkey seed, as `nsc generate creds` writes them.
func checkCreds(path string) error {
	data, err := readSmallFile(path, true)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w; set the .creds file your NATS operator issued (nsc generate creds), or \"\" for none", err)
	}
	if err != nil {
		return err
	}
	const fix = "; it must be a NATS user credentials file as `nsc generate creds` writes it"
	jwt, err := nkeys.ParseDecoratedJWT(data)
	if err != nil || !bytes.Contains(data, []byte("BEGIN NATS USER JWT")) || strings.Count(jwt, ".") != 2 {
		return fmt.Errorf("%s holds no user JWT%s", path, fix)
	}
	if _, err := nkeys.ParseDecoratedUserNKey(data); err != nil {
		return fmt.Errorf("%s holds no user nkey seed (%v)%s", path, err, fix)
	}
	return nil
}

// checkCA accepts a PEM file with at least one certificate.
func checkCA(path string) error {
	data, err := readSmallFile(path, false)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Errorf("%s holds no PEM certificate; set the CA that signed the NATS server's certificate", path)
	}
	return nil
}
