package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"sort"

	"github.com/nats-io/nkeys"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/enroll"
	"github.com/ikto-mesh/ikto/pkg/ipam"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// hostFiles are the paths of one host's files in the output directory.
type hostFiles struct{ config, creds, key string }

func filesOf(dir, name string) hostFiles {
	base := filepath.Join(dir, name)
	return hostFiles{config: base + ".json", creds: base + ".creds", key: base + ".key"}
}

// previous is what an earlier enrollment of the name left in the directory.
type previous struct {
	files   []string       // those of the three that exist
	cfg     *config.Config // nil without NAME.json
	userKey string         // the user of NAME.creds; "" without one
	key     *wgtypes.Key   // the private key of NAME.key; nil without one
}

func (p previous) exists() bool { return len(p.files) > 0 }

func readPrevious(dir, name string) (previous, error) {
	var p previous
	paths := filesOf(dir, name)
	data, err := readOptional(paths.config)
	if err != nil {
		return p, err
	}
	if data != nil {
		p.files = append(p.files, paths.config)
		if p.cfg, err = config.Parse(bytes.NewReader(data)); err != nil {
			return p, fmt.Errorf("%s: %w; fix it or remove it to enroll %s afresh", paths.config, err, name)
		}
	}
	if data, err = readOptional(paths.creds); err != nil {
		return p, err
	}
	if data != nil {
		p.files = append(p.files, paths.creds)
		if uc, _, err := enroll.ReadCreds(data); err == nil {
			p.userKey = uc.Subject
		}
	}
	if data, err = readOptional(paths.key); err != nil || data == nil {
		return p, err
	}
	p.files = append(p.files, paths.key)
	k, err := config.LoadPrivateKey(paths.key)
	if err != nil {
		return p, err
	}
	p.key = &k
	return p, nil
}

// enrollment is what enroll writes for one host.
type enrollment struct {
	cfg      config.Config
	prefix   netip.Prefix
	wgPublic wgtypes.Key
	// newKey is the private key to write to NAME.key; nil when the host
	// keeps its own (--public-key) or an earlier NAME.key stays.
	newKey   *wgtypes.Key
	user     enroll.User
	userSeed []byte // nil with --user-nkey
	creds    []byte
	account  string
}

func (a *app) planEnrollment(ctx context.Context, m *bucket.Mesh, in *enrollInput, prev previous) (*enrollment, error) {
	e := &enrollment{}
	if err := e.chooseKeys(in, prev); err != nil {
		return nil, err
	}
	p, err := choosePrefix(ctx, m, in, prev.cfg, e.wgPublic)
	if err != nil {
		return nil, fmt.Errorf("NATS server %s: %w", m.Servers, err)
	}
	e.prefix = p
	inbox := enroll.InboxPrefix(e.user.Key)
	subjects, err := enroll.Permissions(enroll.Host{Bucket: m.Bucket(), Prefix: p, InboxPrefix: inbox})
	if err != nil {
		return nil, err
	}
	e.user.Name, e.user.Subjects = in.name, subjects
	if in.expires > 0 {
		e.user.Expires = a.now().Add(in.expires)
	}
	e.cfg = config.Config{
		Name: in.name, AdvertiseAddress: in.advertise.String(),
		PrivateAddress: p.Addr().String(), SubnetPrefix: p.Bits(), MeshCIDR: in.rules.Mesh.String(),
		WGDevName: in.wgDevName, WGPort: in.wgPort, PrivateKeyPath: in.keyPath,
		NATSCreds: filepath.Join(in.hostDir, in.name+".creds"), NATSURL: hostURLs(a.natsURL), NATSKV: m.Bucket(),
		NATSTLSCA: a.tlsCA, NATSTLSCert: a.tlsCert, NATSTLSKey: a.tlsKey,
		NATSInboxPrefix: inbox,
	}
	return e, nil
}

// chooseKeys keeps the host's own keys when it gave them, then an earlier
// WireGuard key (a re-enrollment keeps the host's identity), and makes the
// rest. A re-enrollment always gets a new NATS user unless --user-nkey.
func (e *enrollment) chooseKeys(in *enrollInput, prev previous) error {
	switch {
	case in.publicKey != nil:
		e.wgPublic = *in.publicKey
	case prev.key != nil:
		e.wgPublic = prev.key.PublicKey()
	default:
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return fmt.Errorf("generate a WireGuard key: %w", err)
		}
		e.newKey, e.wgPublic = &k, k.PublicKey()
	}
	if in.userKey != "" {
		e.user.Key = in.userKey
		return nil
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("generate a NATS user key: %w", err)
	}
	defer kp.Wipe()
	e.user.Key, _ = kp.PublicKey()
	seed, err := kp.Seed()
	// Seed returns the key pair's own bytes, which Wipe zeroes.
	e.userSeed = append([]byte(nil), seed...)
	return err
}

// choosePrefix keeps an earlier enrollment's prefix when it is still free
// or held by this host's key; otherwise it draws one that is free.
func choosePrefix(ctx context.Context, m *bucket.Mesh, in *enrollInput, prev *config.Config, pub wgtypes.Key) (netip.Prefix, error) {
	if prev != nil {
		addr, err := netip.ParseAddr(prev.PrivateAddress)
		p := netip.PrefixFrom(addr, in.rules.Bits)
		if err == nil && p.Masked() == p && in.rules.Mesh.Contains(addr) {
			holder, err := m.HolderKey(ctx, p)
			if err != nil {
				return netip.Prefix{}, err
			}
			if holder == "" || holder == pub.String() {
				return p, nil
			}
		}
	}
	p, err := ipam.DrawFree(ctx, in.rules.Mesh, in.rules.Bits, nil, m.Claimed)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("draw a free prefix in bucket %s: %w", m.Bucket(), err)
	}
	return p, nil
}

// sign makes the user JWT and the .creds file.
func (e *enrollment) sign(account nkeys.KeyPair) error {
	token, err := enroll.Sign(account, e.user)
	if err != nil {
		return err
	}
	e.account, _ = account.PublicKey()
	e.creds, err = enroll.Creds(token, e.userSeed)
	return err
}

// write writes the key (when new), the creds and last the config, so that a
// config on disk means the files it names are complete.
func (e *enrollment) write(in *enrollInput, replace bool) error {
	paths := filesOf(in.dir, in.name)
	if e.newKey != nil {
		if err := writeSecret(paths.key, []byte(e.newKey.String()+"\n"), replace); err != nil {
			return err
		}
	}
	if err := writeSecret(paths.creds, e.creds, replace); err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(e.cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", paths.config, err)
	}
	return writeSecret(paths.config, append(cfg, '\n'), replace)
}

func (e *enrollment) report(w io.Writer, in *enrollInput, bucketName string) {
	paths := filesOf(in.dir, in.name)
	expires := "never"
	if !e.user.Expires.IsZero() {
		expires = e.user.Expires.UTC().Format("2006-01-02T15:04:05Z")
	}
	fmt.Fprintf(w, "enrolled %s: prefix %s in bucket %s (key %s)\n", in.name, e.prefix, bucketName, peer.Key(e.prefix))
	fmt.Fprintf(w, "  %s  agent config (nats_inbox_prefix %s)\n", paths.config, e.cfg.NATSInboxPrefix)
	fmt.Fprintf(w, "  %s  NATS user %s of account %s, expires %s; it may write only this host's record and heartbeat\n",
		paths.creds, e.user.Key, e.account, expires)
	switch {
	case e.newKey != nil:
		fmt.Fprintf(w, "  %s  WireGuard private key (public key %s)\n", paths.key, e.wgPublic)
	case in.publicKey != nil:
		fmt.Fprintf(w, "  no %s: the host keeps its private key at %s (public key %s)\n", filepath.Base(paths.key), in.keyPath, e.wgPublic)
	default:
		fmt.Fprintf(w, "  %s  kept (public key %s)\n", paths.key, e.wgPublic)
	}
	if e.userSeed == nil {
		fmt.Fprintf(w, "%s holds no seed: on %s, append the seed of user %s (its line starting with SU) to %s\n",
			filepath.Base(paths.creds), in.name, e.user.Key, e.cfg.NATSCreds)
	}
	fmt.Fprintf(w, "install the files in %s on %s (mode 0600) and run: ikto-agent -c %s\n",
		in.hostDir, in.name, filepath.Join(in.hostDir, in.name+".json"))
}

// printChanges says what re-enrolling the name would change.
func printChanges(w io.Writer, in *enrollInput, prev previous, e *enrollment) {
	fmt.Fprintf(w, "%s is already enrolled in %s (%d files); re-enrolling changes:\n", in.name, in.dir, len(prev.files))
	changed := 0
	if prev.cfg != nil {
		for _, d := range configChanges(*prev.cfg, e.cfg) {
			fmt.Fprintf(w, "  %s\n", d)
			changed++
		}
	}
	if prev.userKey != e.user.Key {
		fmt.Fprintf(w, "  NATS user: %s -> %s (the old user stays valid until it expires or is revoked: ikto-admin revoke-user)\n", dash(prev.userKey), e.user.Key)
		changed++
	}
	if e.newKey != nil && prev.key != nil {
		fmt.Fprintf(w, "  WireGuard key: %s -> %s\n", prev.key.PublicKey(), e.wgPublic)
		changed++
	}
	if changed == 0 {
		fmt.Fprintln(w, "  nothing but the JWT's issue date")
	}
}

// configChanges lists the fields of two configs that differ, by JSON name.
func configChanges(old, new config.Config) []string {
	a, b := fieldMap(old), fieldMap(new)
	names := make([]string, 0, len(a)+len(b))
	for k := range a {
		names = append(names, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var out []string
	for _, k := range names {
		if a[k] != b[k] {
			out = append(out, fmt.Sprintf("%s: %s -> %s", k, dash(a[k]), dash(b[k])))
		}
	}
	return out
}

func fieldMap(c config.Config) map[string]string {
	raw, _ := json.Marshal(c)
	var m map[string]json.RawMessage
	_ = json.Unmarshal(raw, &m)
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}
