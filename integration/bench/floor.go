package bench

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// floorSubject is what the floor's subscribers follow: nothing else in the
// run publishes to it.
const floorSubject = "bench.floor"

// floorResult is what delivering a message to N connections costs the
// server with nothing of ikto's on either end.
type floorResult struct {
	all       []time.Duration // per message: publish → the last subscriber has it
	serverCPU time.Duration   // per two messages (as a put and a delete)
}

// fanoutFloor connects n plain subscribers (a connection and a subscription
// each, as an agent follows the bucket) and publishes 2×rounds core NATS
// messages shaped like a republished record, one at a time, each once every
// subscriber has the one before. No JetStream, no agent: the time and the
// server CPU are the least any design that tells every host of a change
// can spend on this server and these cores, for comparison with the rounds'.
func (e *propagationEnv) fanoutFloor(ctx context.Context, n, rounds int) (*floorResult, error) {
	var target atomic.Pointer[probe]
	conns, err := subscribe(ctx, e.url, "bench-floor", n, floorSubject, func(i int, _ *nats.Msg) {
		if p := target.Load(); p != nil {
			p.seen(i)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	defer closeAll(conns)
	rec, err := e.fleet.Records(1)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(floorSubject)
	msg.Data = rec[0].Encode()
	msg.Header.Set("Nats-Stream", "KV_"+e.bucket)
	msg.Header.Set("Nats-Subject", "$KV."+e.bucket+".floor")
	msg.Header.Set("Nats-Sequence", "1000000")
	msg.Header.Set("Nats-Last-Sequence", "999999")

	before, err := e.cpuTimes()
	if err != nil {
		return nil, err
	}
	res := &floorResult{}
	for m := range 2 * rounds {
		p := newProbe(n)
		p.arm()
		target.Store(p)
		if err := e.nc.PublishMsg(msg); err != nil {
			return nil, fmt.Errorf("floor: message %d: %w", m+1, err)
		}
		if err := p.wait(ctx, probeTimeout); err != nil {
			return nil, fmt.Errorf("floor: message %d: %w", m+1, err)
		}
		res.all = append(res.all, slices.Max(p.latencies()))
	}
	target.Store(nil)
	if res.serverCPU, _, err = e.cpuSince(before, rounds); err != nil {
		return nil, err
	}
	return res, nil
}

func (r *floorResult) figures(n int) []Figure {
	name := fmt.Sprintf("N=%s floor", thousands(n))
	all := NewFigure("propagation", name+": a core NATS message → received by all N plain subscribers", "ms", Millis(r.all), nil)
	all.Note = "no JetStream, no agent: the least the server and these cores allow"
	return []Figure{all,
		NewFigure("propagation", name+": CPU per two messages to N subscribers, nats-server", "ms", Millis([]time.Duration{r.serverCPU}), nil)}
}
