package bucket

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// explainDial names the fix for a failed attempt to reach a server: the
// refused port, the name that does not resolve, the silent address, the
// certificate and the credentials each say what to check, so an operator can
// tell them apart.
func explainDial(err error) error {
	var dnsErr *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var recordErr tls.RecordHeaderError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: nothing listens there; is nats-server running, and is the port in nats_url its client port (4222 by default)?", err)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Errorf("%w: that host name does not resolve; check its spelling in nats_url", err)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("%w: no route to that address; check the address in nats_url and this host's network", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: no answer from that address; a firewall drops the traffic, or the address in nats_url is wrong", err)
	case errors.As(err, &unknownCA), errors.As(err, &badHost):
		return fmt.Errorf("%w: the server's TLS certificate is not trusted for that name; set nats_tls_ca to the authority that signed it, and use the name the certificate carries in nats_url", err)
	case errors.As(err, &recordErr), errors.Is(err, nats.ErrSecureConnWanted):
		return fmt.Errorf("%w: TLS is used on one side only; use tls:// in nats_url with nats_tls_ca for a server that wants TLS, nats:// for one that does not", err)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Errorf("%w: the server wants TLS; set nats_tls_ca (and nats_tls_cert/nats_tls_key if it asks for a client certificate)", err)
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return fmt.Errorf("%w: the server refused the credentials; check the user and password in nats_url, or nats_creds", err)
	}
	return err
}

// explainConnect is explainDial for what nats.Connect returned: behind its
// "no servers available for connection" it looks for the cause itself.
func explainConnect(err error, urls []string, timeout time.Duration) error {
	if !errors.Is(err, nats.ErrNoServers) {
		return explainDial(err)
	}
	if why := whyNoServer(urls, timeout); why != nil {
		return why
	}
	return fmt.Errorf("%w: each server takes a TCP connection but none completed the NATS handshake; is the port in nats_url a NATS client port (not the cluster, leafnode or monitoring port)?", err)
}

// whyNoServer is the cause behind nats.go's "no servers available for
// connection", which it returns in place of the last attempt's error: each
// server is dialled once over TCP, and the first failure found is returned,
// explained. nil when every server takes a TCP connection (the failure was
// past it: the handshake, TLS or authentication).
func whyNoServer(urls []string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	for _, raw := range urls {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			continue
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "4222")
		}
		conn, err := net.DialTimeout("tcp", host, timeout)
		if err != nil {
			return explainDial(err)
		}
		conn.Close()
	}
	return nil
}
