// Package lossy is a NATS proxy for tests that loses messages: it passes a
// client's connection through to a server and drops a share of the
// messages the server delivers on chosen subjects, as a congested route or
// a slow client would lose core NATS messages. Everything else passes
// untouched, so the client's connection stays healthy.
package lossy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Proxy listens on loopback and passes connections to a server.
type Proxy struct {
	ln     net.Listener
	server string                       // host:port
	lose   func(subject string) float64 // the share of a subject's messages dropped

	dropped atomic.Int64
	passed  atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
	// debt is, per share, how much loss is owed: each message on a subject
	// that loses share adds share, and a message is dropped whenever a whole
	// one is owed. So the share dropped is exact however few messages pass
	// (never none of seven at 40%), spread evenly from a random start.
	debt map[float64]float64
	wg   sync.WaitGroup
}

// Start listens on listen (host:port; port 0 picks one) and proxies to
// server (host:port), dropping the share lose says (0..1) of the messages
// delivered on each subject.
func Start(listen, server string, lose func(subject string) float64) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("lossy proxy: %w", err)
	}
	p := &Proxy{ln: ln, server: server, lose: lose, debt: map[float64]float64{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// URL is the proxy's address as a NATS URL.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Dropped and Passed count the messages on subjects that lose some.
func (p *Proxy) Dropped() int64 { return p.dropped.Load() }
func (p *Proxy) Passed() int64  { return p.passed.Load() }

// Cut closes every connection made so far, as a network fault would; the
// proxy goes on listening, so clients reconnect.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// Close stops listening and cuts every connection.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.server)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(server, client)
			_ = server.Close()
		}()
		go func() {
			defer p.wg.Done()
			_ = p.filter(client, server)
			_ = client.Close()
		}()
	}
}

// filter copies the server's protocol to the client, frame by frame,
// leaving out the dropped messages.
func (p *Proxy) filter(client io.Writer, server io.Reader) error {
	r := bufio.NewReaderSize(server, 64<<10)
	w := bufio.NewWriterSize(client, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		frame := append([]byte(nil), line...)
		size, subject, isMsg, err := msgSize(line)
		if err != nil {
			return err
		}
		if isMsg {
			body := make([]byte, size+2) // payload and its CRLF
			if _, err := io.ReadFull(r, body); err != nil {
				return err
			}
			frame = append(frame, body...)
			if share := p.lose(subject); share > 0 {
				if p.owe(share) {
					p.dropped.Add(1)
					continue
				}
				p.passed.Add(1)
			}
		}
		if _, err := w.Write(frame); err != nil {
			return err
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// Prefix loses share of the messages on the subjects that start with
// prefix.
func Prefix(prefix string, share float64) func(string) float64 {
	return func(subject string) float64 {
		if strings.HasPrefix(subject, prefix) {
			return share
		}
		return 0
	}
}

// msgSize reads a MSG or HMSG control line: "MSG subject sid [reply]
// size" or "HMSG subject sid [reply] hdrsize size".
func msgSize(line []byte) (size int, subject string, isMsg bool, err error) {
	f := strings.Fields(string(bytes.TrimRight(line, "\r\n")))
	if len(f) == 0 {
		return 0, "", false, nil
	}
	switch strings.ToUpper(f[0]) {
	case "MSG", "HMSG":
	default:
		return 0, "", false, nil
	}
	if len(f) < 4 {
		return 0, "", false, errors.New("lossy proxy: short message line: " + string(line))
	}
	size, err = strconv.Atoi(f[len(f)-1])
	if err != nil {
		return 0, "", false, fmt.Errorf("lossy proxy: message line %q: %w", line, err)
	}
	return size, f[1], true, nil
}

// owe adds share to what is owed for it and reports whether this message
// pays a whole loss.
func (p *Proxy) owe(share float64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.debt[share]
	if !ok {
		d = rand.Float64() // a random phase, so runs differ
	}
	d += share
	drop := d >= 1
	if drop {
		d--
	}
	p.debt[share] = d
	return drop
}
