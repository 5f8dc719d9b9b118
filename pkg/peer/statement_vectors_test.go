package peer

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/xeddsa"
)

var updateVectors = flag.Bool("update-vectors", false, "rewrite testdata/statements.json")

// statementVector is one entry of testdata/statements.json: what a signed
// statement's bytes are (docs/contract.md §4), and a signature of them that
// verifies (XEdDSA signatures are randomized, so the vector pins the bytes
// and one valid signature, not the only one).
type statementVector struct {
	What       string   `json:"what"`
	PrivateKey string   `json:"private_key,omitempty"` // the WireGuard key that signs
	Operator   string   `json:"operator_seed,omitempty"`
	Record     Record   `json:"record,omitempty"`
	Key        string   `json:"key,omitempty"`
	Command    *Command `json:"command,omitempty"`
	Statement  string   `json:"statement_hex"`
}

var vectorRules = Rules{Mesh: netip.MustParsePrefix("fd10::/16"), Bits: 48, Bucket: "ikto-mesh"}

func TestStatementVectors(t *testing.T) {
	priv, err := wgtypes.ParseKey("ULV7nL5XTGhoOV7U6xGo1zfOOZHlVJvuDzNnCQM8Yks=")
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	op := ed25519.NewKeyFromSeed(seed)
	rec := Record{Name: "alpha", PublicKey: priv.PublicKey().String(), AdvertiseAddress: "198.18.0.2",
		AllowedIP: "fd10:2082:5bc1::/48", WGPort: 51820, Seq: 1796126624783034}
	key := Key(netip.MustParsePrefix(rec.AllowedIP))
	if *updateVectors {
		if err := vectorRules.SignRecord(&rec, priv); err != nil {
			t.Fatal(err)
		}
		hc, err := vectorRules.HostCommand(key, priv, rec.Seq)
		if err != nil {
			t.Fatal(err)
		}
		oc := vectorRules.OperatorCommand(key, priv.PublicKey(), rec.Seq, op)
		vs := []statementVector{
			{What: "record", PrivateKey: priv.String(), Record: rec, Statement: hex.EncodeToString(vectorRules.RecordStatement(rec))},
			{What: "delete by the host", PrivateKey: priv.String(), Key: key, Command: &hc, Statement: hex.EncodeToString(vectorRules.deleteStatement(key, hc))},
			{What: "delete by an operator", Operator: hex.EncodeToString(seed), Key: key, Command: &oc, Statement: hex.EncodeToString(vectorRules.deleteStatement(key, oc))},
		}
		b, err := json.MarshalIndent(vs, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("testdata/statements.json", append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("testdata/statements.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []statementVector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 {
		t.Fatalf("%d vectors, want 3", len(vs))
	}
	for _, v := range vs {
		t.Run(v.What, func(t *testing.T) {
			var got []byte
			switch {
			case v.Command == nil:
				got = vectorRules.RecordStatement(v.Record)
				pk, _ := wgtypes.ParseKey(v.Record.PublicKey)
				if !vectorRules.verifyRecord(v.Record, pk) {
					t.Error("the record's signature does not verify")
				}
				sig, _ := decodeSig(v.Record.Sig)
				edpk, err := xeddsa.EdwardsPublicKey(pk)
				if err != nil || !ed25519.Verify(edpk, got, sig[:]) {
					t.Errorf("the record's signature does not verify with crypto/ed25519 under the Edwards key: %v", err)
				}
			default:
				got = vectorRules.deleteStatement(v.Key, *v.Command)
				rules := vectorRules
				rules.Operators = []ed25519.PublicKey{op.Public().(ed25519.PublicKey)}
				if _, _, err := rules.ParseCommand(v.Key, v.Command.Encode()); err != nil {
					t.Errorf("the command does not verify: %v", err)
				}
			}
			if hex.EncodeToString(got) != v.Statement {
				t.Errorf("statement bytes\n got %x\nwant %s", got, v.Statement)
			}
		})
	}
}
