package enroll

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The contract's example prefix and its key.
var (
	specPrefix = netip.MustParsePrefix("fd10:2082:5bc1::/48")
	specKey    = "ZmQxMDoyMDgyOjViYzE6Oi80OA=="
	inbox      = "_INBOX_UABC"
)

func TestPermissionsForTheSpecExample(t *testing.T) {
	got, err := Permissions(Host{Bucket: "ikto-mesh", Prefix: specPrefix, InboxPrefix: inbox})
	if err != nil {
		t.Fatal(err)
	}
	want := Subjects{
		Publish: []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO.KV_ikto-mesh",
			"$JS.API.STREAM.INFO.KV_ikto-mesh-live",
			"$JS.API.DIRECT.GET.KV_ikto-mesh.>",
			"$JS.API.STREAM.MSG.GET.KV_ikto-mesh",
			"$JS.API.DIRECT.GET.KV_ikto-mesh",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh.>",
			"$JS.API.CONSUMER.DELETE.KV_ikto-mesh.>",
			"$JS.FC.KV_ikto-mesh.>",
			"$JS.API.DIRECT.GET.KV_ikto-mesh-live.>",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh-live.>",
			"$JS.API.CONSUMER.DELETE.KV_ikto-mesh-live.>",
			"$JS.FC.KV_ikto-mesh-live.>",
			"$KV.ikto-mesh.peers." + specKey,
			"$KV.ikto-mesh-live.hb." + specKey,
		},
		Subscribe: []string{
			inbox + ".>",
			"$JS.EVENT.ADVISORY.STREAM.*.KV_ikto-mesh",
			"ikto.kv.ikto-mesh.>",
			"$JS.API.STREAM.PURGE.KV_ikto-mesh",
			"$JS.API.STREAM.MSG.DELETE.KV_ikto-mesh",
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Permissions (-want +got):\n%s", diff)
	}
}

// TestPermissionsFollowTheBucket: another nats_kv changes every bucket
// subject, and nothing of the default bucket is left.
func TestPermissionsFollowTheBucket(t *testing.T) {
	v4 := netip.MustParsePrefix("100.64.7.0/24")
	got, err := Permissions(Host{Bucket: "mesh_2", Prefix: v4, InboxPrefix: inbox})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(got.Publish, got.Subscribe...) {
		if strings.Contains(s, "ikto-mesh") {
			t.Errorf("subject %q names the default bucket", s)
		}
	}
	// 100.64.7.0/24 in padded base64url.
	key := "MTAwLjY0LjcuMC8yNA=="
	for _, s := range []string{"$KV.mesh_2.peers." + key, "$KV.mesh_2-live.hb." + key, "$JS.API.STREAM.INFO.KV_mesh_2-live",
		"$JS.API.DIRECT.GET.KV_mesh_2-live.$KV.mesh_2-live.hb." + key} {
		if !Allows(got.Publish, s) {
			t.Errorf("publish %s is not allowed", s)
		}
	}
}

// enrolledSubjects are the subjects enrolled hosts sent (nats.go v1.55):
// ikto-agent, and ikto-admin -c host.json running list, health and prune
// --dry-run. The first traces: an agent's first start with no bucket (INFO,
// the refused STREAM.CREATE), the claim, the watch, the heartbeat, a stop.
// The later ones (integration's TestEnrolledMeshIsNeverRefused with
// IKTO_VIOLATIONS_TRACE): joins, leaves, agent and server restarts, a copy
// of a host's key on a live host's claim, 1500 heartbeats (so that a scan
// of them needs flow control), and those ikto-admin commands. Both server
// generations sent the same shapes. MSG.GET on the bucket is for one made
// without direct get, and $JS.FC on it for a watch that passes 1 MiB. The
// host's own writes are shown with the spec example's key.
var enrolledSubjects = map[string]struct{ pub, sub []string }{
	"nats-server 2.9.10": {
		pub: []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO.KV_ikto-mesh",
			"$JS.API.STREAM.INFO.KV_ikto-mesh-live",
			"$JS.API.DIRECT.GET.KV_ikto-mesh.$KV.ikto-mesh.revoked.-QbmW6ZEVktzxmDz80kovB5NualFZlFeCZ0Fk657eik=",
			"$JS.API.DIRECT.GET.KV_ikto-mesh.$KV.ikto-mesh.revoked.ws_86z7cvVmtJRyBom_SMrCRQPAOvdLruD4PPFcGsDY=",
			"$JS.API.DIRECT.GET.KV_ikto-mesh.$KV.ikto-mesh.peers." + specKey,
			"$JS.API.DIRECT.GET.KV_ikto-mesh.$KV.ikto-mesh.peers.ZmRmMzo3NDUxOjlmYWM6Oi80OA==",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh.fGdDnjA8dUiwYbT2ItLeGs.$KV.ikto-mesh.>",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh.YMXi91Ar.$KV.ikto-mesh.>",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh.5C0y6lmz.$KV.ikto-mesh.peers.>",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh.HtAD4qwR.$KV.ikto-mesh.revoked.>",
			"$JS.API.CONSUMER.DELETE.KV_ikto-mesh.fGdDnjA8dUiwYbT2ItLeGs",
			"$JS.API.CONSUMER.DELETE.KV_ikto-mesh.5C0y6lmz",
			"$JS.API.DIRECT.GET.KV_ikto-mesh-live.$KV.ikto-mesh-live.hb.ZmRmMzo3NDUxOjlmYWM6Oi80OA==",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh-live.HGCUFNSc.$KV.ikto-mesh-live.hb.>",
			"$JS.API.CONSUMER.DELETE.KV_ikto-mesh-live.HGCUFNSc",
			"$JS.FC.KV_ikto-mesh-live.HGCUFNSc.t1Ov",
			"$KV.ikto-mesh.peers." + specKey,
			"$KV.ikto-mesh-live.hb." + specKey,
		},
		sub: []string{
			inbox + ".Kx3Ev0sIu2kQmXo3Nd1SDW", inbox + ".Kx3Ev0sIu2kQmXo3Nd1SDW.*",
			"$JS.EVENT.ADVISORY.STREAM.*.KV_ikto-mesh",
			"ikto.kv.ikto-mesh.>",
			"$JS.API.STREAM.PURGE.KV_ikto-mesh", "$JS.API.STREAM.MSG.DELETE.KV_ikto-mesh",
		},
	},
	"nats-server 2.15.2": {
		pub: []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO.KV_ikto-mesh",
			"$JS.API.STREAM.INFO.KV_ikto-mesh-live",
			"$JS.API.DIRECT.GET.KV_ikto-mesh.$KV.ikto-mesh.revoked.-QbmW6ZEVktzxmDz80kovB5NualFZlFeCZ0Fk657eik=",
			"$JS.API.DIRECT.GET.KV_ikto-mesh.$KV.ikto-mesh.revoked.ZNOp4eck-XrKifF2viSAFfSzC5wQvS3CHD_d8MVokXQ=",
			"$JS.API.DIRECT.GET.KV_ikto-mesh.$KV.ikto-mesh.peers.ZmQxYjo2N2RhOmU4Mzk6Oi80OA==",
			"$JS.API.STREAM.MSG.GET.KV_ikto-mesh",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh.yTq1Fb0dXUHN2sn6Ozqt4Y.$KV.ikto-mesh.>",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh.Oapb8bEF.$KV.ikto-mesh.peers.>",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh.V6gRd90N.$KV.ikto-mesh.revoked.>",
			"$JS.API.CONSUMER.DELETE.KV_ikto-mesh.yTq1Fb0dXUHN2sn6Ozqt4Y",
			"$JS.API.CONSUMER.DELETE.KV_ikto-mesh.Oapb8bEF",
			"$JS.FC.KV_ikto-mesh.yTq1Fb0dXUHN2sn6Ozqt4Y.1.4",
			"$JS.API.DIRECT.GET.KV_ikto-mesh-live.$KV.ikto-mesh-live.hb.ZmQxYjo2N2RhOmU4Mzk6Oi80OA==",
			"$JS.API.CONSUMER.CREATE.KV_ikto-mesh-live.N3HEmbMY.$KV.ikto-mesh-live.hb.>",
			"$JS.API.CONSUMER.DELETE.KV_ikto-mesh-live.N3HEmbMY",
			"$JS.FC.KV_ikto-mesh-live.N3HEmbMY.MveF",
			"$KV.ikto-mesh.peers." + specKey,
			"$KV.ikto-mesh-live.hb." + specKey,
		},
		sub: []string{
			inbox + ".e7K0sLq1nDfXv9aZp2bQwA", inbox + ".e7K0sLq1nDfXv9aZp2bQwA.*",
			"$JS.EVENT.ADVISORY.STREAM.*.KV_ikto-mesh",
			"ikto.kv.ikto-mesh.>",
			"$JS.API.STREAM.PURGE.KV_ikto-mesh", "$JS.API.STREAM.MSG.DELETE.KV_ikto-mesh",
		},
	},
}

func TestPermissionsAllowWhatEnrolledHostsSend(t *testing.T) {
	p, err := Permissions(Host{Bucket: "ikto-mesh", Prefix: specPrefix, InboxPrefix: inbox})
	if err != nil {
		t.Fatal(err)
	}
	for server, want := range enrolledSubjects {
		for _, s := range want.pub {
			if !Allows(p.Publish, s) {
				t.Errorf("%s: publish %s is refused", server, s)
			}
		}
		for _, s := range want.sub {
			if !Allows(p.Subscribe, s) {
				t.Errorf("%s: subscribe %s is refused", server, s)
			}
		}
	}
}

// TestPermissionsRefuse lists what a compromised host must not do.
func TestPermissionsRefuse(t *testing.T) {
	p, err := Permissions(Host{Bucket: "ikto-mesh", Prefix: specPrefix, InboxPrefix: inbox})
	if err != nil {
		t.Fatal(err)
	}
	other := "ZmQxMDoxOjo6LzQ4" // fd10:1::/48
	for _, s := range []string{
		"$KV.ikto-mesh.peers." + other,
		"$KV.ikto-mesh.peers.>",
		"$KV.ikto-mesh.revoked.-QbmW6ZEVktzxmDz80kovB5NualFZlFeCZ0Fk657eik=",
		"$KV.ikto-mesh-live.hb." + other,
		"$KV.other.peers." + specKey,
		"$JS.API.STREAM.CREATE.KV_ikto-mesh",
		"$JS.API.STREAM.CREATE.KV_ikto-mesh-live",
		"$JS.API.STREAM.UPDATE.KV_ikto-mesh",
		"$JS.API.STREAM.DELETE.KV_ikto-mesh",
		"$JS.API.STREAM.DELETE.KV_ikto-mesh-live",
		"$JS.API.STREAM.PURGE.KV_ikto-mesh",
		"$JS.API.STREAM.PURGE.KV_ikto-mesh-live",
		"$JS.API.STREAM.MSG.DELETE.KV_ikto-mesh",
		"$JS.API.STREAM.INFO.KV_other",
		"$JS.API.STREAM.UPDATE.KV_ikto-mesh-live",
		"$JS.API.STREAM.MSG.DELETE.KV_ikto-mesh-live",
		"$JS.API.STREAM.MSG.GET.KV_ikto-mesh-live",
		"$JS.API.CONSUMER.CREATE.KV_other.x.$KV.other.>",
		"$JS.API.DIRECT.GET.KV_other.$KV.other.hb." + other,
		"$JS.API.STREAM.LIST",
		"$SYS.REQ.ACCOUNT.x.CLAIMS.UPDATE",
	} {
		if Allows(p.Publish, s) {
			t.Errorf("publish %s is allowed", s)
		}
	}
	for _, s := range []string{"_INBOX.>", "_INBOX.abc", "_INBOX_UXYZ.>", "_INBOX_UABCD.x", ">", "$KV.ikto-mesh.>",
		"$JS.API.>", "$JS.API.STREAM.DELETE.KV_ikto-mesh", "$JS.API.STREAM.PURGE.KV_other", "$JS.FC.KV_ikto-mesh.>"} {
		if Allows(p.Subscribe, s) {
			t.Errorf("subscribe %s is allowed", s)
		}
	}
}

func TestPermissionsRejectBadHosts(t *testing.T) {
	for _, h := range []Host{
		{Bucket: "ikto.mesh", Prefix: specPrefix, InboxPrefix: inbox},
		{Bucket: "", Prefix: specPrefix, InboxPrefix: inbox},
		{Bucket: "ikto-mesh", Prefix: netip.MustParsePrefix("fd10:2082:5bc1::1/48"), InboxPrefix: inbox},
		{Bucket: "ikto-mesh", InboxPrefix: inbox},
		{Bucket: "ikto-mesh", Prefix: specPrefix, InboxPrefix: "_INBOX"},
		{Bucket: "ikto-mesh", Prefix: specPrefix, InboxPrefix: "_INBOX.host"},
		{Bucket: "ikto-mesh", Prefix: specPrefix, InboxPrefix: "_INBOX_a.>"},
		{Bucket: "ikto-mesh", Prefix: specPrefix, InboxPrefix: ""},
	} {
		if p, err := Permissions(h); err == nil {
			t.Errorf("Permissions(%+v) = %v, want an error", h, p)
		}
	}
}

func TestAllows(t *testing.T) {
	for _, tc := range []struct {
		pattern, subject string
		want             bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.b.c", false},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{"*.b.>", "x.b.y", true},
		{">", "anything.at.all", true},
		{"a.b>", "a.b>", true}, // ">" inside a token is a literal
	} {
		if got := Allows([]string{tc.pattern}, tc.subject); got != tc.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tc.pattern, tc.subject, got, tc.want)
		}
	}
}

func TestInboxPrefixIsPerUser(t *testing.T) {
	a, b := InboxPrefix("UAAA"), InboxPrefix("UBBB")
	if a == b || strings.HasPrefix(a+".", "_INBOX.") {
		t.Errorf("InboxPrefix: %q and %q", a, b)
	}
}
