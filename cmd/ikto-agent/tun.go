package main

import (
	"log/slog"
	"os"
	"sync"

	"github.com/ikto-mesh/ikto/pkg/fdstore"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// tunKeeper carries the embedded device's TUN across agent restarts and
// upgrades in systemd's file descriptor store (docs/contract.md §6): each
// device the agent opens leaves its TUN there, and the next agent's device
// runs on it, so the link, its address and its routes never go away and
// what is sent meanwhile waits in it. Outside systemd (no store) it does
// nothing.
type tunKeeper struct {
	store *fdstore.Store
	name  string // the store's name for the TUN
	log   *slog.Logger

	mu   sync.Mutex
	left *os.File // the TUN the agent before left, until a device takes it
}

func newTUNKeeper(store *fdstore.Store, kind wgdev.Kind, dev string, log *slog.Logger) *tunKeeper {
	k := &tunKeeper{store: store, name: "tun-" + dev, log: log}
	k.left = store.Take(k.name)
	if k.left != nil && kind == wgdev.KindKernel {
		// wg_backend changed to kernel: the TUN must go for the link.
		log.Info("releasing the TUN the agent before ran its userspace device on: wg_backend is kernel now", "device", dev)
		k.left.Close()
		k.left = nil
		k.drop()
	}
	return k
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
// store.
func (k *tunKeeper) open(c wgdev.Config, open func(wgdev.Config) (wgdev.Device, error)) (wgdev.Device, error) {
	k.mu.Lock()
	c.TUN, k.left = k.left, nil
	k.mu.Unlock()
	d, err := open(c)
	if err != nil {
		return nil, err
	}
	if t, ok := d.(interface{ TUN() *os.File }); ok && t.TUN() != nil {
		if err := k.store.Put(k.name, t.TUN()); err != nil {
			k.log.Warn("the TUN cannot outlive this agent: a restart will make it again (its routes go meanwhile)", "device", c.Name, "err", err)
		}
	}
	return d, nil
}

// drop takes the TUN out of the store: the device goes with this agent.
func (k *tunKeeper) drop() {
	if err := k.store.Remove(k.name); err != nil {
		k.log.Warn("the TUN stays in systemd's fd store until the unit stops", "err", err)
	}
}
