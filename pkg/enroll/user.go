package enroll

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// User is one enrolled host's NATS user, or, with no Subjects, a user of
// the operator's with no restriction.
type User struct {
	// Name names the user in the server's connz: the host's name.
	Name string
	// Key is the user's public nkey (U…).
	Key string
	// Subjects are what the user may publish and subscribe to; a user
	// restricted to them is a host's and also gets HostLimits.
	Subjects Subjects
	// Expires ends the JWT's validity; zero means it never expires.
	Expires time.Time
}

// ErrNotSeed is matched by an error for a key that is not a seed of the
// kind asked for (an account seed where an operator seed is wanted, a
// public key where a seed is wanted).
var ErrNotSeed = errors.New("not an nkey seed of the expected kind")

// ParseSeed reads an nkey seed of kind (nkeys.PrefixByteAccount,
// nkeys.PrefixByteOperator, ...) from data: the bare seed, as nsc keeps it
// in its key store, or a decorated block as in a .creds file.
func ParseSeed(data []byte, kind nkeys.PrefixByte) (nkeys.KeyPair, error) {
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSeed, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSeed, err)
	}
	got, _, err := nkeys.DecodeSeed(seed)
	if err != nil || got != kind {
		kp.Wipe()
		return nil, fmt.Errorf("%w: want a seed of %s, got one of %s", ErrNotSeed, kindName(kind), kindName(got))
	}
	return kp, nil
}

func kindName(k nkeys.PrefixByte) string {
	switch k {
	case nkeys.PrefixByteOperator:
		return "an operator (SO…)"
	case nkeys.PrefixByteAccount:
		return "an account (SA…)"
	case nkeys.PrefixByteUser:
		return "a user (SU…)"
	}
	return "another kind"
}

// Sign returns u's user JWT, issued by account (an account key pair, whose
// signature the server checks against the account JWT it trusts). A host's
// user (one with Subjects) gets HostLimits; an operator's user gets none.
func Sign(account nkeys.KeyPair, u User) (string, error) {
	if !nkeys.IsValidPublicUserKey(u.Key) {
		return "", fmt.Errorf("user key %q is not a public user nkey (U…)", u.Key)
	}
	issuer, err := account.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(issuer) {
		return "", fmt.Errorf("sign user %s: %w: the signer must be an account key", u.Name, ErrNotSeed)
	}
	uc := jwt.NewUserClaims(u.Key)
	uc.Name = u.Name
	uc.Pub.Allow = append(jwt.StringList(nil), u.Subjects.Publish...)
	uc.Sub.Allow = append(jwt.StringList(nil), u.Subjects.Subscribe...)
	if len(u.Subjects.Publish) > 0 || len(u.Subjects.Subscribe) > 0 {
		uc.Limits.NatsLimits = HostLimits()
	}
	if !u.Expires.IsZero() {
		uc.Expires = u.Expires.Unix()
	}
	token, err := uc.Encode(account)
	if err != nil {
		return "", fmt.Errorf("sign user %s: %w", u.Name, err)
	}
	return token, nil
}

// Creds is the .creds file for the user JWT token: the JWT and the user's
// seed, or only the JWT when seed is nil (a host that made its own user key
// appends its seed).
func Creds(token string, seed []byte) ([]byte, error) {
	if seed == nil {
		return jwt.DecorateJWT(token)
	}
	return jwt.FormatUserConfig(token, seed)
}

// ReadCreds returns the user claims of a .creds (or bare JWT) file's
// contents, and whether the file also holds a user seed.
func ReadCreds(data []byte) (*jwt.UserClaims, bool, error) {
	token, err := nkeys.ParseDecoratedJWT(data)
	if err != nil {
		return nil, false, fmt.Errorf("no user JWT: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, false, fmt.Errorf("no user JWT: %w", err)
	}
	_, seedErr := nkeys.ParseDecoratedUserNKey(data)
	return uc, seedErr == nil, nil
}
