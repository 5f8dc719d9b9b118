package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// underlay is where synthetic hosts advertise themselves: the benchmarking
// range of RFC 2544. No packet is ever sent to these addresses: in-memory
// devices send nothing, and a userspace device sends nothing to a peer it
// has no traffic for (no persistent keepalive is configured).
var underlay = netip.MustParsePrefix("198.18.0.0/15")

// Fleet hands out identities for synthetic hosts: a unique prefix of the
// mesh and a unique underlay address per index. Records it makes pass every
// acceptance rule, so agents apply them like any other host's claim.
type Fleet struct {
	Mesh netip.Prefix
	Bits int
	next atomic.Int64
}

// NewFleet returns a fleet of /bits prefixes inside mesh (IPv6 only: the
// index is written into the bits between the two lengths).
func NewFleet(mesh netip.Prefix, bits int) (*Fleet, error) {
	if !mesh.Addr().Is6() || bits-mesh.Bits() < 20 || bits > 64 {
		return nil, fmt.Errorf("fleet: %s with /%d leaves too few prefixes", mesh, bits)
	}
	return &Fleet{Mesh: mesh.Masked(), Bits: bits}, nil
}

// Next reserves an index no other caller gets.
func (f *Fleet) Next() int { return int(f.next.Add(1)) }

// Prefix is the index-th /Bits of the mesh.
func (f *Fleet) Prefix(index int) netip.Prefix {
	a := f.Mesh.Addr().As16()
	hi := binary.BigEndian.Uint64(a[:8])
	hi |= uint64(index) << (64 - f.Bits)
	binary.BigEndian.PutUint64(a[:8], hi)
	return netip.PrefixFrom(netip.AddrFrom16(a), f.Bits)
}

// Endpoint is the index-th underlay address.
func (f *Fleet) Endpoint(index int) netip.Addr {
	b := underlay.Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) + uint32(index%(1<<17-2)) + 1
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Record is the claim of the index-th synthetic host with public key pub.
func (f *Fleet) Record(index int, pub wgtypes.Key) peer.Record {
	return peer.Record{
		Name:             fmt.Sprintf("sim-%05d", index),
		PublicKey:        pub.String(),
		AdvertiseAddress: f.Endpoint(index).String(),
		AllowedIP:        f.Prefix(index).String(),
		WGPort:           config.DefaultPort,
	}
}

// Records makes n records with fresh indexes and real WireGuard key pairs
// (a userspace device derives a secret from each public key, so random bytes
// would not cost the same). Keys are generated on every CPU.
func (f *Fleet) Records(n int) ([]peer.Record, error) { return f.records(n, nil) }

// SignedRecords is Records with each record signed by its key for bucket,
// as an agent signs its own (seq: the time in microseconds).
func (f *Fleet) SignedRecords(n int, bucket string) ([]peer.Record, error) {
	rules := peer.Rules{Mesh: f.Mesh, Bits: f.Bits, Bucket: bucket}
	seq := uint64(time.Now().UnixMicro())
	return f.records(n, func(r *peer.Record, k wgtypes.Key) error {
		r.Seq = seq
		return rules.SignRecord(r, k)
	})
}

func (f *Fleet) records(n int, sign func(*peer.Record, wgtypes.Key) error) ([]peer.Record, error) {
	out := make([]peer.Record, n)
	var g errgroup.Group
	g.SetLimit(runtime.NumCPU())
	for i := range out {
		idx := f.Next()
		g.Go(func() error {
			k, err := wgtypes.GeneratePrivateKey()
			if err != nil {
				return fmt.Errorf("generate key: %w", err)
			}
			out[i] = f.Record(idx, k.PublicKey())
			if sign != nil {
				return sign(&out[i], k)
			}
			return nil
		})
	}
	return out, g.Wait()
}

// AgentConfig writes a private key for the index-th host into dir and returns
// its validated configuration against natsURL and bucket. Resync is the
// drift-repair period ("" = the default).
func (f *Fleet) AgentConfig(dir string, index int, natsURL, bucket, resync string) (*config.Config, error) {
	keyPath := filepath.Join(dir, fmt.Sprintf("host-%05d.key", index))
	if _, err := config.CreatePrivateKey(keyPath); err != nil {
		return nil, err
	}
	c := &config.Config{
		Name:             fmt.Sprintf("agent-%05d", index),
		AdvertiseAddress: f.Endpoint(index).String(),
		PrivateAddress:   f.Prefix(index).Addr().String(),
		SubnetPrefix:     f.Bits,
		MeshCIDR:         f.Mesh.String(),
		WGDevName:        "ikbench",
		PrivateKeyPath:   keyPath,
		NATSURL:          natsURL,
		NATSKV:           bucket,
		ResyncInterval:   resync,
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config of host %d: %w", index, err)
	}
	return c, nil
}

// putTimeout bounds waiting for the acks of one chunk of PutRecords.
const putTimeout = time.Minute

// putChunk keeps the publishes in flight under nats.go's async limit, so a
// put of 10,000 records never stalls on it.
const putChunk = 1000

// PutRecords stores recs in bucket as their hosts' claims would, with
// pipelined publishes to the bucket's subjects (what a KV put is), and
// checks every acknowledgement.
func PutRecords(ctx context.Context, js jetstream.JetStream, bucket string, recs []peer.Record) error {
	for chunk := range slices.Chunk(recs, putChunk) {
		if err := putChunkOf(ctx, js, bucket, chunk); err != nil {
			return err
		}
	}
	return nil
}

func putChunkOf(ctx context.Context, js jetstream.JetStream, bucket string, recs []peer.Record) error {
	futures := make([]jetstream.PubAckFuture, 0, len(recs))
	for _, r := range recs {
		p, err := netip.ParsePrefix(r.AllowedIP)
		if err != nil {
			return fmt.Errorf("put %s: %w", r.Name, err)
		}
		fut, err := js.PublishAsync("$KV."+bucket+"."+peer.Key(p), r.Encode())
		if err != nil {
			return fmt.Errorf("put %s into %s: %w", r.Name, bucket, err)
		}
		futures = append(futures, fut)
	}
	ctx, cancel := context.WithTimeout(ctx, putTimeout)
	defer cancel()
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("put %d records into %s: %w", len(recs), bucket, ctx.Err())
	}
	failed := 0
	var first error
	for _, fut := range futures {
		select {
		case err := <-fut.Err():
			if failed++; first == nil {
				first = err
			}
		default:
		}
	}
	if failed > 0 {
		return fmt.Errorf("put into %s: %d of %d records failed, first: %w", bucket, failed, len(recs), first)
	}
	return nil
}
