package world

import (
	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/directory"
)

// Path selection is the client package's own: client.ChoosePath over the
// simulated client's guard sample (kept with client.UpdateGuards,
// MarkFailed and MarkConnected), with the simulation's random stream.

// pathLength is the number of hops of every circuit.
const pathLength = 3

// choosePath returns guard, middle, exit for port, or nil.
func (c *Client) choosePath(port uint16) []*directory.RouterStatus {
	path, err := client.ChoosePath(&c.guards, c.w.cons, c.w.sim.Now(), c.rand, client.PathRequest{
		Port: port, Stable: client.NeedsStable(port), Length: pathLength,
	})
	if err != nil {
		return nil
	}
	return path
}
