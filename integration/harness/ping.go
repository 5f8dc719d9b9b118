package harness

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit"
)

// Pinger is a `ping -D -i INTERVAL` left running from a host, for
// measuring what a disruption (an agent restart, an outage) costs traffic.
type Pinger struct {
	From     *Host
	To       netip.Addr
	Interval time.Duration
	proc     *Process
}

// PingReport is what a stopped Pinger saw.
type PingReport struct {
	// Sent is the echo requests ping sent; Counted leaves out the last
	// second of them, whose replies may still have been on the way when it
	// was stopped.
	Sent, Counted int
	// Lost are the sequence numbers among the counted ones that got no
	// reply.
	Lost []int
	// LongestGap is the longest time between two consecutive replies.
	LongestGap time.Duration
	// First and Last are the times of the first and last reply.
	First, Last time.Time
}

// StartPinger pings to from h every interval (under 200 ms needs root), with
// a one-second reply timeout. Network.Close kills it if the test does not
// stop it.
func (h *Host) StartPinger(name string, to netip.Addr, interval time.Duration) (*Pinger, error) {
	secs := strconv.FormatFloat(interval.Seconds(), 'f', 3, 64)
	p, err := h.Start(name, "ping", "-n", "-D", "-i", secs, "-W", "1", to.String())
	if err != nil {
		return nil, err
	}
	return &Pinger{From: h, To: to, Interval: interval, proc: p}, nil
}

// Replies is how many echo replies arrived so far.
func (p *Pinger) Replies() int {
	return len(parsePings(p.proc.Logs()).replies)
}

// WaitReplies waits until at least n more replies than now have arrived,
// or the pinger exits, or timeout passes.
func (p *Pinger) WaitReplies(ctx context.Context, n int, timeout time.Duration) error {
	want := p.Replies() + n
	return testkit.Poll(ctx, timeout, func(context.Context) error {
		if p.proc.Exited() {
			return testkit.Permanent(fmt.Errorf("ping from %s to %s exited:\n%s", p.From.Name, p.To, p.proc.LogTail(5)))
		}
		if got := p.Replies(); got < want {
			return fmt.Errorf("%d of %d echo replies from %s to %s", got, want, p.From.Name, p.To)
		}
		return nil
	})
}

// Stop interrupts ping (which then prints its summary), waits for it and
// reports.
func (p *Pinger) Stop() (PingReport, error) {
	if err := p.proc.Signal(syscall.SIGINT); err != nil {
		return PingReport{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.proc.Wait(ctx); err != nil {
		_ = p.proc.Stop(0)
		return PingReport{}, err
	}
	r := parsePings(p.proc.Logs())
	if r.sent == 0 {
		return PingReport{}, fmt.Errorf("ping from %s to %s printed no summary:\n%s", p.From.Name, p.To, p.proc.LogTail(5))
	}
	tail := int(time.Second / p.Interval)
	rep := PingReport{Sent: r.sent, Counted: max(r.sent-tail, 0)}
	for seq := 1; seq <= rep.Counted; seq++ {
		if _, ok := r.replies[seq]; !ok {
			rep.Lost = append(rep.Lost, seq)
		}
	}
	for i, at := range r.times {
		if i == 0 {
			rep.First = at
		} else {
			rep.LongestGap = max(rep.LongestGap, at.Sub(r.times[i-1]))
		}
		rep.Last = at
	}
	return rep, nil
}

// Logs is what ping printed.
func (p *Pinger) Logs() string { return p.proc.Logs() }

var (
	pingReplyLine = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from .*icmp_seq=(\d+)`)
	pingSummary   = regexp.MustCompile(`^(\d+) packets transmitted`)
)

type parsedPings struct {
	sent    int
	replies map[int]bool
	times   []time.Time // of first replies, in order
}

func parsePings(log string) parsedPings {
	r := parsedPings{replies: map[int]bool{}}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		line := sc.Text()
		if m := pingSummary.FindStringSubmatch(line); m != nil {
			r.sent, _ = strconv.Atoi(m[1])
			continue
		}
		m := pingReplyLine.FindStringSubmatch(line)
		if m == nil || strings.Contains(line, "(DUP!)") {
			continue
		}
		seq, _ := strconv.Atoi(m[3])
		if r.replies[seq] {
			continue
		}
		r.replies[seq] = true
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		frac := m[2]
		usec, _ := strconv.ParseInt((frac + "000000")[:6], 10, 64)
		r.times = append(r.times, time.Unix(sec, usec*1000))
	}
	return r
}
