package userspace

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// This file speaks the WireGuard cross-platform configuration protocol
// (https://www.wireguard.com/xplatform/#configuration-protocol) as text, so the
// device can be configured in-process through IpcSetOperation/IpcGetOperation
// instead of through its unix socket.

// writePeerConfigs writes changes as the body of one "set" operation. Keys are
// hex; update_only comes straight after public_key because wireguard-go drops
// a peer it has just created when it sees update_only.
func writePeerConfigs(w io.Writer, changes []wgtypes.PeerConfig) error {
	bw := bufio.NewWriter(w)
	for i := range changes {
		if err := writePeerConfig(bw, &changes[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func writePeerConfig(w *bufio.Writer, c *wgtypes.PeerConfig) error {
	fmt.Fprintf(w, "public_key=%s\n", hex.EncodeToString(c.PublicKey[:]))
	if c.Remove {
		w.WriteString("remove=true\n")
		return nil
	}
	if c.UpdateOnly {
		w.WriteString("update_only=true\n")
	}
	if c.PresharedKey != nil {
		fmt.Fprintf(w, "preshared_key=%s\n", hex.EncodeToString(c.PresharedKey[:]))
	}
	if c.Endpoint != nil {
		ap, err := addrPortOf(c.Endpoint)
		if err != nil {
			return fmt.Errorf("peer %s: %w", c.PublicKey, err)
		}
		fmt.Fprintf(w, "endpoint=%s\n", ap)
	}
	if c.PersistentKeepaliveInterval != nil {
		secs := int64(*c.PersistentKeepaliveInterval / time.Second)
		if secs < 0 || secs > 65535 {
			return fmt.Errorf("peer %s: persistent keepalive %s out of range", c.PublicKey, *c.PersistentKeepaliveInterval)
		}
		fmt.Fprintf(w, "persistent_keepalive_interval=%d\n", secs)
	}
	if c.ReplaceAllowedIPs {
		w.WriteString("replace_allowed_ips=true\n")
	}
	for _, n := range c.AllowedIPs {
		p, err := prefixOf(n)
		if err != nil {
			return fmt.Errorf("peer %s: %w", c.PublicKey, err)
		}
		fmt.Fprintf(w, "allowed_ip=%s\n", p)
	}
	return nil
}

func addrPortOf(a *net.UDPAddr) (netip.AddrPort, error) {
	addr, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.Port < 1 || a.Port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("invalid endpoint %q", a)
	}
	return netip.AddrPortFrom(addr.Unmap().WithZone(a.Zone), uint16(a.Port)), nil
}

func prefixOf(n net.IPNet) (netip.Prefix, error) {
	addr, ok := netip.AddrFromSlice(n.IP)
	ones, bits := n.Mask.Size()
	if !ok || bits == 0 {
		return netip.Prefix{}, fmt.Errorf("invalid allowed ip %q", n.String())
	}
	if bits == 32 {
		addr = addr.Unmap()
	}
	p := netip.PrefixFrom(addr, ones)
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("invalid allowed ip %q", n.String())
	}
	return p, nil
}

// parsePeers reads the output of a "get" operation and returns its peers.
// Device-level lines are skipped, as are keys this code does not know, so a
// newer wireguard-go adding fields does not break us.
func parsePeers(r io.Reader) ([]wgtypes.Peer, error) {
	var (
		peers []wgtypes.Peer
		cur   *wgtypes.Peer
		hsSec int64
		hsNs  int64
	)
	finish := func() {
		if cur == nil {
			return
		}
		// Zero seconds and nanoseconds mean "never", which is the zero time.
		if hsSec != 0 || hsNs != 0 {
			cur.LastHandshakeTime = time.Unix(hsSec, hsNs)
		}
		peers = append(peers, *cur)
		cur, hsSec, hsNs = nil, 0, 0
	}

	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("parse uapi line %q: missing '='", line)
		}
		if key == "errno" {
			if value != "0" {
				return nil, fmt.Errorf("uapi get: errno=%s", value)
			}
			continue
		}
		if key == "public_key" {
			finish()
			k, err := parseHexKey(value)
			if err != nil {
				return nil, fmt.Errorf("parse uapi public_key: %w", err)
			}
			cur = &wgtypes.Peer{PublicKey: k}
			continue
		}
		if cur == nil {
			continue // private_key, listen_port, fwmark
		}
		if err := parsePeerLine(cur, key, value, &hsSec, &hsNs); err != nil {
			return nil, fmt.Errorf("parse uapi %s for peer %s: %w", key, cur.PublicKey, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read uapi get: %w", err)
	}
	finish()
	return peers, nil
}

func parsePeerLine(p *wgtypes.Peer, key, value string, hsSec, hsNs *int64) error {
	var err error
	switch key {
	case "preshared_key":
		p.PresharedKey, err = parseHexKey(value)
	case "protocol_version":
		p.ProtocolVersion, err = strconv.Atoi(value)
	case "endpoint":
		var ap netip.AddrPort
		ap, err = netip.ParseAddrPort(value)
		if err == nil {
			p.Endpoint = net.UDPAddrFromAddrPort(ap)
		}
	case "last_handshake_time_sec":
		*hsSec, err = strconv.ParseInt(value, 10, 64)
	case "last_handshake_time_nsec":
		*hsNs, err = strconv.ParseInt(value, 10, 64)
	case "rx_bytes":
		p.ReceiveBytes, err = strconv.ParseInt(value, 10, 64)
	case "tx_bytes":
		p.TransmitBytes, err = strconv.ParseInt(value, 10, 64)
	case "persistent_keepalive_interval":
		var secs uint64
		secs, err = strconv.ParseUint(value, 10, 16)
		p.PersistentKeepaliveInterval = time.Duration(secs) * time.Second
	case "allowed_ip":
		var pfx netip.Prefix
		pfx, err = netip.ParsePrefix(value)
		if err == nil {
			p.AllowedIPs = append(p.AllowedIPs, ipNetOf(pfx))
		}
	}
	return err
}

func parseHexKey(s string) (wgtypes.Key, error) {
	var k wgtypes.Key
	b, err := hex.DecodeString(s)
	if err != nil {
		return k, err
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("key is %d bytes, want %d", len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}

// ipNetOf returns p in the form the kernel backend reports: 4-byte IPv4.
func ipNetOf(p netip.Prefix) net.IPNet {
	return net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}
