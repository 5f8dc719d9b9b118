package enroll

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/jwt/v2"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// TestSizingRelations states what each limit must hold, for fleets from
// one host to the largest Sizing allows.
func TestSizingRelations(t *testing.T) {
	// storedOverhead is what a stored message adds to its payload: the
	// subject ($KV.<bucket>.hb.<key>, under 128 bytes for bucket names
	// people use) and the file store's framing (about 30 bytes).
	const storedOverhead = 256
	for _, hosts := range []int{1, 10, DefaultMaxHosts, maxMaxHosts} {
		s := Sizing{MaxHosts: hosts}
		if err := s.Check(); err != nil {
			t.Fatalf("%d hosts: %v", hosts, err)
		}
		h := int64(hosts)
		for _, r := range []struct {
			what string
			ok   bool
		}{
			{"a connection per host, a second one while the server has not noticed a broken one, and room for ikto-admin",
				s.Connections() >= 2*h+adminHeadroom},
			{"a watch per host, a second one while the server has not dropped the old one, and room for ikto-admin",
				s.ConsumersPerStream() >= 2*h+adminHeadroom},
			{"the bucket and its heartbeat bucket, and one more pair",
				s.Streams() == 2*2},
			{"two keys per host, each at most HostMaxPayload, on three replicas",
				s.DiskBytes() >= h*2*(HostMaxPayload+storedOverhead)*3},
			{"a finite disk limit a small server can hold: at most 1 MiB a host",
				s.DiskBytes() > 0 && s.DiskBytes() <= h<<20},
			{"no memory streams", s.MemoryBytes() == 0},
			{"counts the server keeps in an int32",
				s.Connections() <= math.MaxInt32 && s.ConsumersPerStream() <= math.MaxInt32},
		} {
			if !r.ok {
				t.Errorf("%d hosts: want %s", hosts, r.what)
			}
		}
	}
}

func TestSizingRefusesNoHosts(t *testing.T) {
	for _, hosts := range []int{0, -1, maxMaxHosts + 1} {
		if _, err := (Sizing{MaxHosts: hosts}).AccountLimits(); err == nil {
			t.Errorf("AccountLimits for %d hosts: no error", hosts)
		}
		if _, err := NewSizedAuthority("x", Sizing{MaxHosts: hosts}); err == nil {
			t.Errorf("NewSizedAuthority for %d hosts: no error", hosts)
		}
	}
}

// TestAccountJWTCarriesTheLimits decodes the account JWT NewSizedAuthority
// signs: JetStream on, and every limit the sizing's.
func TestAccountJWTCarriesTheLimits(t *testing.T) {
	s := Sizing{MaxHosts: 20}
	auth, err := NewSizedAuthority("test", s)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(auth.AccountJWT)
	if err != nil {
		t.Fatal(err)
	}
	if !ac.Limits.IsJSEnabled() {
		t.Error("JetStream is off in the account JWT")
	}
	got := ac.Limits
	want := jwt.OperatorLimits{
		NatsLimits: jwt.NatsLimits{Subs: -1, Data: -1, Payload: -1},
		AccountLimits: jwt.AccountLimits{Imports: -1, Exports: -1, WildcardExports: true,
			Conn: 2*20 + 64, LeafNodeConn: -1},
		JetStreamLimits: jwt.JetStreamLimits{DiskStorage: 20 * 256 << 10, Streams: 4, Consumer: 2*20 + 64},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("account limits (-want +got):\n%s", diff)
	}
	def, err := NewAuthority("test")
	if err != nil {
		t.Fatal(err)
	}
	dc, err := jwt.DecodeAccountClaims(def.AccountJWT)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := dc.Limits.Consumer, DefaultSizing().ConsumersPerStream(); got != want || want != 2064 {
		t.Errorf("NewAuthority: %d consumers per stream, want DefaultSizing's %d (2064)", got, want)
	}
}

// TestHostPayloadHoldsTheLargestMessages: the payload limit never refuses
// what a real host sends. The largest is a heartbeat of a host that hears
// from no peer in a big fleet, with a name as long as a whole record.
func TestHostPayloadHoldsTheLargestMessages(t *testing.T) {
	// headers is room for what nats.go and ikto put in headers
	// (Nats-Expected-Last-Subject-Sequence, Nats-Msg-Id, KV-Operation):
	// under 256 bytes.
	const headers = 512
	key := "5KW/aOOWAO5j9EH3Y4fL6a/GJ3j+le27+lQNqOx2qig="
	unreachable := make([]string, 10*DefaultMaxHosts)
	for i := range unreachable {
		unreachable[i] = key
	}
	hb := bucket.Heartbeat{
		PublicKey: key, Name: strings.Repeat("n", peer.MaxValueSize),
		At:      time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("x", -11*3600)),
		Version: strings.Repeat("v", 128), Revision: math.MaxUint64, Unreachable: unreachable,
		Writer: bucket.Writer{Instance: strings.Repeat("i", 16), Addr: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"},
	}
	long := strings.Repeat("x", 1000) // what a twin's heartbeat may say, cut to size when carried along
	d := bucket.Duplicate{Writer: bucket.Writer{Instance: long, Addr: long}, Since: hb.At}.Trimmed()
	hb.Duplicate = &d
	value, err := hb.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		what string
		size int
	}{{"the largest heartbeat", len(value)}, {"the largest record peers accept", peer.MaxValueSize}} {
		if m.size+headers > HostMaxPayload/2 {
			t.Errorf("%s: %d bytes and headers, more than half of HostMaxPayload (%d)", m.what, m.size, HostMaxPayload)
		}
	}
	t.Logf("the largest heartbeat is %d bytes; HostMaxPayload %d", len(value), HostMaxPayload)
}

// TestSignPutsTheHostLimits: a host's user carries HostLimits in its JWT;
// an operator's user (no subjects) carries none.
func TestSignPutsTheHostLimits(t *testing.T) {
	account := newAccount(t)
	_, userKey, subjects := newHostUser(t)
	for _, tc := range []struct {
		name     string
		subjects Subjects
		want     jwt.NatsLimits
	}{
		{"host", subjects, jwt.NatsLimits{Subs: HostMaxSubscriptions, Data: -1, Payload: HostMaxPayload}},
		{"operator", Subjects{}, jwt.NatsLimits{Subs: -1, Data: -1, Payload: -1}},
	} {
		token, err := Sign(account, User{Name: tc.name, Key: userKey, Subjects: tc.subjects})
		if err != nil {
			t.Fatal(err)
		}
		uc, err := jwt.DecodeUserClaims(token)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, uc.Limits.NatsLimits); diff != "" {
			t.Errorf("%s user's limits (-want +got):\n%s", tc.name, diff)
		}
		if !uc.Limits.UserLimits.IsUnlimited() {
			t.Errorf("%s user: source or time limits %+v", tc.name, uc.Limits.UserLimits)
		}
	}
	if got, want := HostLimits(), (jwt.NatsLimits{Subs: 32, Data: -1, Payload: 16384}); got != want {
		t.Errorf("HostLimits = %+v, want %+v", got, want)
	}
}
