package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// userCreds is a real NATS user credentials file: a user JWT signed by a
// fresh account key, and the user's seed.
func userCreds(t testing.TB) string {
	t.Helper()
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.NewUserClaims(pub).Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return string(creds)
}

// selfSignedPEM is a throw-away certificate and its key, PEM-encoded.
func selfSignedPEM(t testing.TB) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ikto test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

// TestValidateFiles covers files a config names that exist but are the wrong
// thing: each must fail validation naming the field, the file and the fix,
// and none may block (a FIFO would, if opened).
func TestValidateFiles(t *testing.T) {
	fx := newFiles(t)
	write := func(name, content string) string {
		p := filepath.Join(fx.dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	creds := userCreds(t)
	jwtOnly := creds[:strings.Index(creds, "************************* IMPORTANT")]
	seedOnly := creds[strings.Index(creds, "-----BEGIN USER NKEY SEED-----"):]
	fifo := filepath.Join(fx.dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	_, otherKey := selfSignedPEM(t)
	mismatched := write("other.key", otherKey)
	set := func(kv ...string) func(map[string]any) {
		return func(m map[string]any) {
			for i := 0; i < len(kv); i += 2 {
				m[kv[i]] = kv[i+1]
			}
		}
	}
	tests := []struct {
		name  string
		mod   func(map[string]any)
		field string
		words []string
	}{
		{"creds garbage", set("nats_creds", write("garbage.creds", "user=a password=b\n")), "nats_creds", []string{"garbage.creds", "no user JWT", "nsc generate creds"}},
		{"creds without seed", set("nats_creds", write("jwt.creds", jwtOnly)), "nats_creds", []string{"jwt.creds", "no user nkey seed"}},
		{"creds without jwt", set("nats_creds", write("seed.creds", seedOnly)), "nats_creds", []string{"seed.creds", "no user JWT"}},
		{"creds missing", set("nats_creds", filepath.Join(fx.dir, "gone.creds")), "nats_creds", []string{"gone.creds", "does not exist", "nsc generate creds", `""`}},
		{"creds is a directory", set("nats_creds", fx.dir), "nats_creds", []string{"not a regular file", "directory"}},
		{"creds is a fifo", set("nats_creds", fifo), "nats_creds", []string{"fifo", "named pipe"}},
		{"key is a fifo", set("private_key_path", fifo), "private_key_path", []string{"fifo", "named pipe"}},
		{"ca garbage", set("nats_tls_ca", fx.creds), "nats_tls_ca", []string{"nats.creds", "no PEM certificate"}},
		{"ca is a fifo", set("nats_tls_ca", fifo), "nats_tls_ca", []string{"named pipe"}},
		{"tls key missing", set("nats_tls_cert", fx.cert, "nats_tls_key", filepath.Join(fx.dir, "gone.pem")), "nats_tls_key", []string{"gone.pem", "does not exist"}},
		{"tls key of another cert", set("nats_tls_cert", fx.cert, "nats_tls_key", mismatched), "nats_tls_cert", []string{"cert.pem", "other.key", "private key"}},
		{"tls cert garbage", set("nats_tls_cert", fx.creds, "nats_tls_key", fx.tlsKey), "nats_tls_cert", []string{"nats.creds", "PEM certificate"}},
		{"advertise inside the mesh", set("advertise_address", "fd10:1::1"), "advertise_address", []string{"inside mesh_cidr fd10::/16", "underlay"}},
		{"advertise link-local", set("advertise_address", "fe80::1"), "advertise_address", []string{"not a usable unicast", "link-local"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := goodV6(fx)
			tt.mod(m)
			c, err := parseMap(t, m)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			done := make(chan error, 1)
			go func() { done <- c.Validate() }()
			select {
			case err := <-done:
				checkFieldError(t, err, tt.field, tt.words...)
			case <-time.After(10 * time.Second):
				t.Fatal("Validate blocked for 10s")
			}
		})
	}
}
