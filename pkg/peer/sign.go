package peer

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/xeddsa"
)

// A statement is what a signature covers (docs/contract.md §4): the ASCII
// tag "ikto/1 <kind>\n", then each field as its 4-byte big-endian length
// and its bytes. The first three fields bind the mesh (bucket name, mesh
// CIDR, prefix length), so a statement made in one mesh means nothing in
// another; the rest are the statement's own fields, every one of them.
const statementTag = "ikto/1 "

// The statement kinds.
const (
	kindRecord   = "record"
	kindDelete   = "delete"
	kindRevoke   = "revoke"
	kindHandover = "handover"
)

func (ru Rules) statement(kind string, fields ...string) []byte {
	all := append([]string{ru.Bucket, ru.Mesh.String(), strconv.Itoa(ru.Bits)}, fields...)
	n := len(statementTag) + len(kind) + 1
	for _, f := range all {
		n += 4 + len(f)
	}
	b := make([]byte, 0, n)
	b = append(b, statementTag...)
	b = append(b, kind...)
	b = append(b, '\n')
	for _, f := range all {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// RecordStatement is what a record's signature covers: every field but the
// signature.
func (ru Rules) RecordStatement(r Record) []byte {
	fields := []string{r.Name, r.PublicKey, r.AdvertiseAddress, r.AllowedIP, strconv.Itoa(r.WGPort), strconv.FormatUint(r.Seq, 10)}
	if r.Handover != (Handover{}) {
		fields = append(fields, r.Handover.From, r.Handover.Sig)
	}
	return ru.statement(kindRecord, fields...)
}

// handoverStatement is what the old key signs in a key rotation: that the
// record's key succeeds it at the record's prefix. Every later record of
// the new key carries it, so that the old key stays retired for an agent
// that never saw the rotation.
func (ru Rules) handoverStatement(r Record) []byte {
	return ru.statement(kindHandover, r.Handover.From, r.PublicKey, r.AllowedIP)
}

// SignHandover makes r a key rotation from old: r.Handover signed by old.
// Sign r itself (SignRecord, with the new key) afterwards: its statement
// covers the handover.
func (ru Rules) SignHandover(r *Record, old wgtypes.Key) error {
	r.Handover = Handover{From: old.PublicKey().String()}
	sig, err := xeddsa.Sign(old, ru.handoverStatement(*r))
	if err != nil {
		return fmt.Errorf("sign the handover of %s: %w", r.AllowedIP, err)
	}
	r.Handover.Sig = sigCodec.EncodeToString(sig[:])
	return nil
}

// verifyHandover checks r's handover, if it has one, and returns the key
// it retires.
func (ru Rules) verifyHandover(r Record) (wgtypes.Key, bool) {
	from, err := wgtypes.ParseKey(r.Handover.From)
	if err != nil || r.Handover.From == r.PublicKey {
		return wgtypes.Key{}, false
	}
	sig, ok := decodeSig(r.Handover.Sig)
	return from, ok && xeddsa.Verify(from, ru.handoverStatement(r), sig)
}

// sigCodec encodes signatures and operator keys: standard base64, as
// WireGuard keys are written.
var sigCodec = base64.StdEncoding

// SignRecord sets r.Sig: r signed with private, the WireGuard key r names.
func (ru Rules) SignRecord(r *Record, private wgtypes.Key) error {
	if pub := private.PublicKey().String(); pub != r.PublicKey {
		return fmt.Errorf("sign record %s: the private key is %s's, the record names %s", r.AllowedIP, pub, r.PublicKey)
	}
	r.Sig = ""
	sig, err := xeddsa.Sign(private, ru.RecordStatement(*r))
	if err != nil {
		return fmt.Errorf("sign record %s: %w", r.AllowedIP, err)
	}
	r.Sig = sigCodec.EncodeToString(sig[:])
	return nil
}

// verifyRecord reports whether r.Sig is pk's signature of r.
func (ru Rules) verifyRecord(r Record, pk wgtypes.Key) bool {
	sig, ok := decodeSig(r.Sig)
	return ok && xeddsa.Verify(pk, ru.RecordStatement(r), sig)
}

func decodeSig(s string) ([64]byte, bool) {
	var sig [64]byte
	raw, err := sigCodec.DecodeString(s)
	if err != nil || len(raw) != len(sig) {
		return sig, false
	}
	copy(sig[:], raw)
	return sig, true
}

// Command is the body of a delete marker that removes a record (§5): the
// record's public key and sequence, signed by that key (its host leaving)
// or by an operator key. It removes every statement of the key up to Seq.
type Command struct {
	PublicKey string `json:"public_key"`
	Seq       uint64 `json:"seq"`
	// Signer is the WireGuard public key itself, or an operator key
	// (Ed25519, base64).
	Signer string `json:"signer"`
	Sig    string `json:"sig"`
}

// Encode is the JSON body of the marker that carries c.
func (c Command) Encode() []byte {
	b, _ := json.Marshal(c) // strings and an integer always marshal
	return b
}

func (ru Rules) deleteStatement(key string, c Command) []byte {
	return ru.statement(kindDelete, key, c.PublicKey, strconv.FormatUint(c.Seq, 10), c.Signer)
}

// HostCommand is the command by which the host holding private removes its
// own record at key, up to sequence seq.
func (ru Rules) HostCommand(key string, private wgtypes.Key, seq uint64) (Command, error) {
	pub := private.PublicKey().String()
	c := Command{PublicKey: pub, Seq: seq, Signer: pub}
	sig, err := xeddsa.Sign(private, ru.deleteStatement(key, c))
	if err != nil {
		return Command{}, fmt.Errorf("sign the delete of %s: %w", key, err)
	}
	c.Sig = sigCodec.EncodeToString(sig[:])
	return c, nil
}

// OperatorCommand is the command by which an operator key removes pk's
// record at key, up to sequence seq.
func (ru Rules) OperatorCommand(key string, pk wgtypes.Key, seq uint64, op ed25519.PrivateKey) Command {
	c := Command{PublicKey: pk.String(), Seq: seq, Signer: sigCodec.EncodeToString(op.Public().(ed25519.PublicKey))}
	c.Sig = sigCodec.EncodeToString(ed25519.Sign(op, ru.deleteStatement(key, c)))
	return c
}

// errNoCommand: a marker's body is no signed command (empty for a plain
// KV delete, or not a command's JSON).
var errNoCommand = errors.New("the marker carries no signed command")

// ParseCommand reads and checks the body of a delete marker at key: the
// command, and the public key whose statements it removes. A marker with
// no body is errNoCommand; a body that does not verify says why.
func (ru Rules) ParseCommand(key string, body []byte) (Command, wgtypes.Key, error) {
	if len(body) == 0 {
		return Command{}, wgtypes.Key{}, errNoCommand
	}
	var c Command
	if len(body) > MaxValueSize || json.Unmarshal(body, &c) != nil {
		return Command{}, wgtypes.Key{}, fmt.Errorf("%w: the body is not a command's JSON", errNoCommand)
	}
	pk, err := wgtypes.ParseKey(c.PublicKey)
	if err != nil {
		return Command{}, wgtypes.Key{}, fmt.Errorf("command at %s: public_key %q is not a WireGuard key", key, c.PublicKey)
	}
	sig, ok := decodeSig(c.Sig)
	if !ok {
		return Command{}, wgtypes.Key{}, fmt.Errorf("command at %s: sig is not a base64 64-byte signature", key)
	}
	msg := ru.deleteStatement(key, c)
	if c.Signer == c.PublicKey {
		if !xeddsa.Verify(pk, msg, sig) {
			return Command{}, wgtypes.Key{}, fmt.Errorf("command at %s: not signed by %s", key, c.PublicKey)
		}
		return c, pk, nil
	}
	op, err := ru.operator(c.Signer)
	if err != nil {
		return Command{}, wgtypes.Key{}, fmt.Errorf("command at %s: %w", key, err)
	}
	if !ed25519.Verify(op, msg, sig[:]) {
		return Command{}, wgtypes.Key{}, fmt.Errorf("command at %s: not signed by operator key %s", key, c.Signer)
	}
	return c, pk, nil
}

// operator returns the trusted operator key whose base64 text is s.
func (ru Rules) operator(s string) (ed25519.PublicKey, error) {
	for _, k := range ru.Operators {
		if sigCodec.EncodeToString(k) == s {
			return k, nil
		}
	}
	return nil, fmt.Errorf("signer %s is neither the record's key nor one of operator_keys", s)
}

func (ru Rules) revokeStatement(r Revocation) []byte {
	return ru.statement(kindRevoke, r.PublicKey, r.RevokedAt.UTC().Format(time.RFC3339Nano), r.Signer)
}

// SignRevocation sets r.Signer and r.Sig with operator key op.
func (ru Rules) SignRevocation(r *Revocation, op ed25519.PrivateKey) {
	r.Signer = sigCodec.EncodeToString(op.Public().(ed25519.PublicKey))
	r.Sig = sigCodec.EncodeToString(ed25519.Sign(op, ru.revokeStatement(*r)))
}

// RevocationCounts reports whether the revocation of pk with value v is a
// command: any value where no operator key is trusted (the key alone
// revokes, as in ikto 0.3.0), else one signed by a trusted operator key.
func (ru Rules) RevocationCounts(pk wgtypes.Key, v []byte) error {
	if len(ru.Operators) == 0 {
		return nil
	}
	r, err := DecodeRevocation(v)
	if err != nil {
		return errors.New("the revocation is not JSON, and operator_keys are set: only a signed revocation counts")
	}
	if r.PublicKey != pk.String() {
		return fmt.Errorf("the revocation names %s, not the key of its bucket key", r.PublicKey)
	}
	op, err := ru.operator(r.Signer)
	if err != nil {
		return fmt.Errorf("the revocation: %w", err)
	}
	sig, ok := decodeSig(r.Sig)
	if !ok || !ed25519.Verify(op, ru.revokeStatement(r), sig[:]) {
		return fmt.Errorf("the revocation is not signed by operator key %s", r.Signer)
	}
	return nil
}

// ParseOperatorKey reads an operator public key (base64 of 32 bytes).
func ParseOperatorKey(s string) (ed25519.PublicKey, error) {
	raw, err := sigCodec.DecodeString(s)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("operator key %q is not base64 of a 32-byte Ed25519 public key (ikto-admin keygen prints one)", s)
	}
	return ed25519.PublicKey(raw), nil
}
