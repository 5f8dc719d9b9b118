package enroll

import (
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// RevokeUser returns accountJWT with every JWT of the user userKey issued up
// to at revoked, signed again by signer. A user's JWT is checked against
// its account's JWT, whose issuer is the operator: only the operator's key
// (or the operator signing key that issued the account) can sign the
// revocation, never the account's own key. The server applies it to live
// connections at once when the new account JWT is pushed to it.
func RevokeUser(accountJWT string, signer nkeys.KeyPair, userKey string, at time.Time) (string, error) {
	if !nkeys.IsValidPublicUserKey(userKey) {
		return "", fmt.Errorf("revoke: %q is not a public user nkey (U…)", userKey)
	}
	ac, err := jwt.DecodeAccountClaims(accountJWT)
	if err != nil {
		return "", fmt.Errorf("revoke %s: the account JWT: %w", userKey, err)
	}
	pub, err := signer.PublicKey()
	if err != nil {
		return "", fmt.Errorf("revoke %s: %w", userKey, err)
	}
	if pub != ac.Issuer {
		return "", fmt.Errorf("revoke %s: account %s was issued by %s, not by %s: %w; give the seed of the key that issued it",
			userKey, ac.Subject, ac.Issuer, pub, ErrNotSeed)
	}
	ac.RevokeAt(userKey, at)
	token, err := ac.Encode(signer)
	if err != nil {
		return "", fmt.Errorf("revoke %s: sign account %s: %w", userKey, ac.Subject, err)
	}
	return token, nil
}

// Revoked reports whether accountJWT revokes user JWTs of userKey issued at
// issuedAt.
func Revoked(accountJWT, userKey string, issuedAt time.Time) (bool, error) {
	ac, err := jwt.DecodeAccountClaims(accountJWT)
	if err != nil {
		return false, fmt.Errorf("the account JWT: %w", err)
	}
	return ac.Revocations.IsRevoked(userKey, issuedAt), nil
}

// AccountKey is the public key of the account accountJWT describes.
func AccountKey(accountJWT string) (string, error) {
	ac, err := jwt.DecodeAccountClaims(accountJWT)
	if err != nil {
		return "", fmt.Errorf("the account JWT: %w", err)
	}
	return ac.Subject, nil
}
