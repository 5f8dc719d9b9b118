package mesh

import (
	"fmt"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// rotation is a key rotation under way: the device has the new key, and
// the record that hands the prefix over is not in the bucket yet.
type rotation struct {
	from wgtypes.Key
}

// Rotate makes private this host's key (docs/contract.md §5, key
// rotation). The record the keeper writes next (Repair.Defend over the old
// key's record) carries the old key's handover, and each peer starts the
// first handshake with the new key when it applies that record. So that no
// handshake from here crosses one of theirs (both would be refused), the
// device takes its peers back without endpoints before it takes the new
// key: it answers, and sends nothing, until a peer's handshake (or the
// contact's grace) gives the endpoint back.
func (c *Controller) Rotate(private wgtypes.Key) error {
	peers := c.table.View().Peers
	for k := range peers {
		c.rec.Unset(k)
	}
	if _, err := c.rec.Sync(false); err != nil {
		return fmt.Errorf("rotate the key of %s: take the peers off: %w", c.dev.Name(), err)
	}
	err := c.dev.SetPrivateKey(private)
	now := time.Now()
	for k, p := range peers {
		c.endContact(k)
		if err == nil {
			c.contacts[k] = &contact{since: now, quiet: true}
		}
		c.rec.Set(c.spec(p))
	}
	if err != nil {
		return fmt.Errorf("rotate the key of %s: %w", c.dev.Name(), err)
	}
	from := c.self.Key
	if r := c.rotating; r != nil {
		from = r.from // rotated again before the first one was done
	}
	c.rotating = &rotation{from: from}
	c.self.Key = private.PublicKey()
	c.table.Rotate(c.self.Key)
	c.log.Info("rotating this host's key: the old key hands its prefix over", "from", from, "to", c.self.Key, "prefix", c.self.Prefix)
	return nil
}
