package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/ikto-mesh/ikto/pkg/fdstore"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/backend"
	"github.com/ikto-mesh/ikto/pkg/wgdev/userspace"
)

// tunKeeper carries the embedded device's TUN across agent restarts and
// upgrades in systemd's file descriptor store (docs/contract.md §6): each
// device the agent opens leaves its TUN there, and the next agent's device
// runs on it, so the link, its address and its routes never go away and
// what is sent meanwhile waits in it. What the store holds that the device
// will not run on — stored for another wg_dev_name, or kept while
// wg_backend is kernel — is given back at start, so that its link goes.
// Outside systemd (no store) it does nothing.
type tunKeeper struct {
	store *fdstore.Store
	name  string // the store's name for the TUN
	log   *slog.Logger

	mu      sync.Mutex
	left    *os.File // the TUN the agent before left, until a device takes it
	opened  bool     // a device was opened: current is its TUN, or nil for none
	current *os.File // the open device's TUN, for a hand-over (running)
	dev     string   // wg_dev_name
}

// linkGoneWithin bounds the wait for a released TUN's link to go: systemd
// closes its copy when it reads our message, a moment later.
const linkGoneWithin = 2 * time.Second

func newTUNKeeper(store *fdstore.Store, kind wgdev.Kind, dev string, log *slog.Logger) *tunKeeper {
	k := &tunKeeper{store: store, name: "tun-" + dev, log: log, dev: dev}
	k.left = store.Take(k.name)
	for name, f := range store.TakeRest() {
		k.release(name, f, "stored for another device; wg_dev_name is "+dev+" now")
	}
	if k.left != nil && kind == wgdev.KindKernel {
		k.release(k.name, k.left, "wg_backend is kernel now")
		k.left = nil
	}
	return k
}

// release gives f back: closed here, removed from the store, and its link
// (when it still is one) waited for until it goes, so that what comes next
// does not find it.
func (k *tunKeeper) release(name string, f *os.File, why string) {
	link, _ := userspace.TUNName(f)
	f.Close()
	k.log.Info("releasing the TUN the agent before left: "+why, "stored_as", name, "link", link)
	if err := k.store.Remove(name); err != nil {
		k.log.Warn("the TUN stays in systemd's fd store until the unit stops", "stored_as", name, "err", err)
		return
	}
	if link == "" {
		return
	}
	for deadline := time.Now().Add(linkGoneWithin); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := net.InterfaceByName(link); err != nil {
			return
		}
	}
	k.log.Warn("the released TUN's link is still there", "link", link, "waited", linkGoneWithin)
}

// config is c with the TUN left, for Preflight to judge.
func (k *tunKeeper) config(c wgdev.Config) wgdev.Config {
	k.mu.Lock()
	defer k.mu.Unlock()
	c.TUN = k.left
	return c
}

// open opens the device with the TUN left, if any (it is the device's from
// then on, whether or not it opens), and leaves the new device's TUN in the
// store in place of what was stored; a device without a TUN of its own
// (kernel, external) leaves nothing there.
func (k *tunKeeper) open(c wgdev.Config, open func(wgdev.Config) (wgdev.Device, error)) (wgdev.Device, error) {
	k.mu.Lock()
	c.TUN, k.left = k.left, nil
	k.mu.Unlock()
	d, err := open(c)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.opened, k.current = true, nil
	k.mu.Unlock()
	if t, ok := d.(interface{ TUN() *os.File }); ok && t.TUN() != nil {
		k.mu.Lock()
		k.current = t.TUN()
		k.mu.Unlock()
		if err := k.store.Put(k.name, t.TUN()); err != nil {
			k.log.Warn("the TUN cannot outlive this agent: a restart will make it again (its routes go meanwhile)", "device", c.Name, "err", err)
		}
		return d, nil
	}
	if c.TUN != nil {
		k.drop()
	}
	return d, nil
}

// drop takes the TUN out of the store: the device goes with this agent.
func (k *tunKeeper) drop() {
	if err := k.store.Remove(k.name); err != nil {
		k.log.Warn("the TUN stays in systemd's fd store until the unit stops", "err", err)
	}
}

// running is the open device's TUN, what a hand-over passes: nil for a
// device without one (kernel, external); an error while no device is open
// yet, or while its TUN is no longer the link (the device closing, or made
// again after a loss), for the new agent to try again.
func (k *tunKeeper) running() (*os.File, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.opened {
		return nil, errors.New("this agent has not opened its device yet; try again in a moment")
	}
	if k.current == nil {
		return nil, nil
	}
	if err := userspace.CheckTUN(k.current, k.dev); err != nil {
		return nil, fmt.Errorf("this agent's device is closing or being made again (%v); try again in a moment", err)
	}
	return k.current, nil
}

// takeOver takes the device over from the agent running on it
// (--replace): its TUN, when it passes one, is the TUN left for the device,
// as one from systemd's store would be. Nothing running is no error.
func (k *tunKeeper) takeOver(dev string, kind wgdev.Kind) error {
	tun, from, err := backend.TakeOver(dev, replaceWait)
	if err != nil {
		return err
	}
	if from.PID == 0 {
		k.log.Info("--replace: no agent drives the device; starting as usual", "device", dev)
		return nil
	}
	k.log.Info("took the device over from the agent before", "device", dev, "pid", from.PID, "tun", tun != nil)
	if tun == nil {
		return nil
	}
	if err := userspace.CheckTUN(tun, dev); err != nil {
		tun.Close()
		return fmt.Errorf("take %s over: the TUN passed by pid %d is not this host's device: %w", dev, from.PID, err)
	}
	if kind == wgdev.KindKernel {
		k.release("handed-over", tun, "wg_backend is kernel now")
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.left != nil {
		k.left.Close() // the store's, from an agent before the one handing over
	}
	k.left = tun
	return nil
}
