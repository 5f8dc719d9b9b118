package enroll

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func newAccount(t *testing.T) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func newUser(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return kp, pub
}

// newHostUser is a new user and the permissions of the contract's example
// host (specPrefix in bucket ikto-mesh) connecting as that user.
func newHostUser(t *testing.T) (user nkeys.KeyPair, userKey string, subjects Subjects) {
	t.Helper()
	user, userKey = newUser(t)
	subjects, err := Permissions(Host{Bucket: "ikto-mesh", Prefix: specPrefix, InboxPrefix: InboxPrefix(userKey)})
	if err != nil {
		t.Fatal(err)
	}
	return user, userKey, subjects
}

func TestSignCarriesThePermissions(t *testing.T) {
	account := newAccount(t)
	_, userKey, subjects := newHostUser(t)
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	token, err := Sign(account, User{Name: "host-a", Key: userKey, Subjects: subjects, Expires: expires})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	accountKey, _ := account.PublicKey()
	got := []any{uc.Subject, uc.Issuer, uc.Name, uc.Expires, []string(uc.Pub.Allow), []string(uc.Sub.Allow), len(uc.Pub.Deny)}
	want := []any{userKey, accountKey, "host-a", expires.Unix(), subjects.Publish, subjects.Subscribe, 0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("user claims (-want +got):\n%s", diff)
	}
}

func TestSignRefusesWrongKeys(t *testing.T) {
	account := newAccount(t)
	user, userKey := newUser(t)
	accountKey, _ := account.PublicKey()
	if _, err := Sign(account, User{Name: "x", Key: accountKey}); err == nil {
		t.Error("Sign with an account key as the user: no error")
	}
	if _, err := Sign(user, User{Name: "x", Key: userKey}); !errors.Is(err, ErrNotSeed) {
		t.Errorf("Sign by a user key = %v, want ErrNotSeed", err)
	}
}

func TestCredsWithAndWithoutSeed(t *testing.T) {
	account := newAccount(t)
	user, userKey := newUser(t)
	token, err := Sign(account, User{Name: "x", Key: userKey})
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	for _, tc := range []struct {
		name     string
		seed     []byte
		wantSeed bool
	}{{"with seed", seed, true}, {"jwt only", nil, false}} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := Creds(token, tc.seed)
			if err != nil {
				t.Fatal(err)
			}
			uc, hasSeed, err := ReadCreds(data)
			if err != nil || uc.Subject != userKey || hasSeed != tc.wantSeed {
				t.Errorf("ReadCreds = %v, seed %v, %v; want %s, seed %v", uc, hasSeed, err, userKey, tc.wantSeed)
			}
			if got := strings.Contains(string(data), string(seed)); got != tc.wantSeed {
				t.Errorf("seed in the file: %v, want %v", got, tc.wantSeed)
			}
		})
	}
	// The host's step for a JWT-only file: append its seed line.
	data, _ := Creds(token, nil)
	data = append(data, append(seed, '\n')...)
	if _, hasSeed, err := ReadCreds(data); err != nil || !hasSeed {
		t.Errorf("JWT-only creds with the seed appended: seed %v, %v", hasSeed, err)
	}
}

func TestParseSeed(t *testing.T) {
	account := newAccount(t)
	seed, _ := account.Seed()
	pub, _ := account.PublicKey()
	op, _ := nkeys.CreateOperator()
	opSeed, _ := op.Seed()
	for _, tc := range []struct {
		name string
		data []byte
		kind nkeys.PrefixByte
		ok   bool
	}{
		{"bare account seed", append(append([]byte(nil), seed...), '\n'), nkeys.PrefixByteAccount, true},
		{"operator seed for an account", opSeed, nkeys.PrefixByteAccount, false},
		{"operator seed", opSeed, nkeys.PrefixByteOperator, true},
		{"public key", []byte(pub), nkeys.PrefixByteAccount, false},
		{"garbage", []byte("hello"), nkeys.PrefixByteAccount, false},
	} {
		kp, err := ParseSeed(tc.data, tc.kind)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.ok && !errors.Is(err, ErrNotSeed):
			t.Errorf("%s: %v, want ErrNotSeed", tc.name, err)
		case tc.ok:
			if got, _ := kp.PublicKey(); tc.kind == nkeys.PrefixByteAccount && got != pub {
				t.Errorf("%s: key %s, want %s", tc.name, got, pub)
			}
		}
	}
}

func TestRevokeUser(t *testing.T) {
	auth, err := NewAuthority("test")
	if err != nil {
		t.Fatal(err)
	}
	_, userKey := newUser(t)
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	token, err := RevokeUser(auth.AccountJWT, auth.Operator, userKey, at)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		issued time.Time
		want   bool
	}{{at.Add(-time.Hour), true}, {at, true}, {at.Add(time.Hour), false}} {
		if got, err := Revoked(token, userKey, tc.issued); err != nil || got != tc.want {
			t.Errorf("Revoked(issued %s) = %v, %v; want %v", tc.issued, got, err, tc.want)
		}
	}
	ac, err := jwt.DecodeAccountClaims(token)
	opKey, _ := auth.Operator.PublicKey()
	if err != nil || ac.Issuer != opKey || !ac.Limits.IsJSEnabled() {
		t.Errorf("revoked account JWT: issuer %s, JetStream %v (%v); want %s and JetStream kept", ac.Issuer, ac.Limits.IsJSEnabled(), err, opKey)
	}
	// Only the issuer can sign it: never the account itself.
	if _, err := RevokeUser(auth.AccountJWT, auth.Account, userKey, at); !errors.Is(err, ErrNotSeed) {
		t.Errorf("RevokeUser signed by the account = %v, want ErrNotSeed", err)
	}
	other, _ := nkeys.CreateOperator()
	if _, err := RevokeUser(auth.AccountJWT, other, userKey, at); !errors.Is(err, ErrNotSeed) {
		t.Errorf("RevokeUser signed by another operator = %v, want ErrNotSeed", err)
	}
}
