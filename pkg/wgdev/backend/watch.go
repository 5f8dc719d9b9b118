package backend

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchRemoval returns a channel that is closed when the link called name
// disappears (`ip link del`, an interface manager, an external wireguard-go
// that died and took its TUN with it), or right away when there is no such
// link. It watches the calling thread's network namespace through a netlink
// subscription, which costs nothing until links change, and stops when ctx
// ends.
func WatchRemoval(ctx context.Context, name string) (<-chan struct{}, error) {
	updates := make(chan netlink.LinkUpdate, 16)
	done := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{ErrorCallback: func(error) {}})
	if err != nil {
		return nil, fmt.Errorf("watch link %s: %w", name, err)
	}
	gone := make(chan struct{})
	stop := func() { close(done) }
	// A link deleted before the subscription began sends no event.
	if _, err := netlink.LinkByName(name); err != nil {
		stop()
		close(gone)
		return gone, nil
	}
	go func() {
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case u, open := <-updates:
				if !open {
					return // the subscription broke: the device's own errors tell then
				}
				if u.Header.Type == unix.RTM_DELLINK && u.Link != nil && u.Link.Attrs().Name == name {
					close(gone)
					return
				}
			}
		}
	}()
	return gone, nil
}
