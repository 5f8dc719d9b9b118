package enroll

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Authority is a NATS operator with its system account and the one account
// that holds the mesh: what `nsc add operator --sys` and `nsc add account`
// make, for operators without nsc and for tests. The keys are secrets.
type Authority struct {
	Operator, System, Account          nkeys.KeyPair
	OperatorJWT, SystemJWT, AccountJWT string
}

// NewAuthority makes an operator named name, its system account "SYS" and
// the account "ikto", where the buckets' streams live, with JetStream and
// the limits of DefaultSizing.
func NewAuthority(name string) (*Authority, error) {
	return NewSizedAuthority(name, DefaultSizing())
}

// NewSizedAuthority is NewAuthority with the mesh account's limits derived
// from sizing (Sizing.AccountLimits).
func NewSizedAuthority(name string, sizing Sizing) (*Authority, error) {
	limits, err := sizing.AccountLimits()
	if err != nil {
		return nil, fmt.Errorf("new authority: %w", err)
	}
	a := &Authority{}
	for _, k := range []struct {
		kp  *nkeys.KeyPair
		new func() (nkeys.KeyPair, error)
	}{{&a.Operator, nkeys.CreateOperator}, {&a.System, nkeys.CreateAccount}, {&a.Account, nkeys.CreateAccount}} {
		if *k.kp, err = k.new(); err != nil {
			return nil, fmt.Errorf("new authority: %w", err)
		}
	}
	opPub, _ := a.Operator.PublicKey()
	sysPub, _ := a.System.PublicKey()
	accPub, _ := a.Account.PublicKey()

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name, oc.SystemAccount = name, sysPub
	if a.OperatorJWT, err = oc.Encode(a.Operator); err != nil {
		return nil, fmt.Errorf("new authority: operator JWT: %w", err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	if a.SystemJWT, err = sc.Encode(a.Operator); err != nil {
		return nil, fmt.Errorf("new authority: system account JWT: %w", err)
	}
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "ikto"
	ac.Limits = limits
	if a.AccountJWT, err = ac.Encode(a.Operator); err != nil {
		return nil, fmt.Errorf("new authority: account JWT: %w", err)
	}
	return a, nil
}

// Resolver is how a nats-server finds account JWTs.
type Resolver struct {
	// Dir, when set, is a "full" resolver keeping the JWTs in this
	// directory: it accepts account updates pushed to it (revocations) and
	// keeps them across restarts. Empty means MEMORY: the JWTs are those of
	// the configuration, and a pushed update lasts until the server restarts.
	Dir string
}

// ServerConfig is the nats-server configuration text (2.9 and later) that
// trusts the authority: the operator, its system account and the accounts'
// JWTs preloaded. It goes beside the server's listen and jetstream blocks.
func (a *Authority) ServerConfig(r Resolver) string {
	sysPub, _ := a.System.PublicKey()
	accPub, _ := a.Account.PublicKey()
	var b strings.Builder
	fmt.Fprintf(&b, "operator: %s\nsystem_account: %s\n", a.OperatorJWT, sysPub)
	if r.Dir == "" {
		b.WriteString("resolver: MEMORY\n")
	} else {
		fmt.Fprintf(&b, "resolver: {\n  type: full\n  dir: %s\n  allow_delete: false\n}\n", strconv.Quote(r.Dir))
	}
	preload := map[string]string{sysPub: a.SystemJWT, accPub: a.AccountJWT}
	keys := make([]string, 0, len(preload))
	for k := range preload {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("resolver_preload: {\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %s\n", k, preload[k])
	}
	b.WriteString("}\n")
	return b.String()
}

// UserCreds makes a new user of account (a key pair of one of the
// authority's accounts) with the given subjects and HostLimits, or with no
// restriction and no limits when s is nil, and returns its .creds file.
func UserCreds(account nkeys.KeyPair, name string, s *Subjects) ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", name, err)
	}
	defer kp.Wipe()
	pub, _ := kp.PublicKey()
	u := User{Name: name, Key: pub}
	if s != nil {
		u.Subjects = *s
	}
	token, err := Sign(account, u)
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", name, err)
	}
	return Creds(token, seed)
}
