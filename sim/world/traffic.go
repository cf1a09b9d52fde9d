package world

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/sim/report"
	"github.com/veilnet/veil/sim/simnet"
)

// Traffic models. A fetch opens a stream to a server, sends
// "GET <bytes>\n" and reads the answer; its time to first byte and
// transfer time run from the moment it asks for a stream (so a fetch that
// waits for a circuit counts the wait, as OnionPerf's do).
//
//   - onionperf: fetch SizesKiB in turn, starting one every Interval
//     (whether or not the last finished), labelled by size: "50KiB",
//     "1MiB", "5MiB".
//   - bulk: fetch SizeKiB, then again at once, labelled "bulk".
//   - web: a page of log-normal size (median PageKiB, sigma 1, 1 KiB to
//     20 MiB), then an exponential think time of mean Think, labelled
//     "web"; Users such sessions run side by side on one client (one
//     simulated client standing for many users, as in tornettools).

type fetch struct {
	c        *Client
	label    string
	size     int
	server   *server
	started  time.Time
	circ     *ccirc
	id       uint16
	received int
	first    bool
	done     bool
	timer    *simnet.Timer
	next     func() // what the traffic model does once the fetch is over
	// iso is the session (user) the fetch belongs to: a circuit that
	// carried one session's streams carries no other's (0: no isolation).
	iso int
	// key is the fetch's content key in a VOPR run (vopr.go; 0: none).
	key uint64
}

// fetchTimeout bounds a fetch: 30 s plus the time to move it at 20 KiB/s.
func fetchTimeout(size int) time.Duration {
	return 30*time.Second + time.Duration(size)*time.Second/(20<<10)
}

func (circ *ccirc) fetch(id uint16) *fetch {
	for _, f := range circ.fetches {
		if f.id == id {
			return f
		}
	}
	return nil
}

func (w *World) addClients() {
	i := 0
	for g := range w.sc.Clients {
		grp := &w.sc.Clients[g]
		for k := range grp.Count {
			name := fmt.Sprintf("%s-%d", grp.Name, k)
			c := &Client{w: w, name: name, group: grp, rand: w.sim.Stream("client " + name),
				cbt: client.NewBuildTimeout(), links: map[simnet.NodeID]*clink{}}
			region := w.pickRegion(grp.Regions, c.rand)
			addr := netip.AddrFrom4([4]byte{100, byte(64 + i>>16), byte(i >> 8), byte(i)})
			c.node = w.net.AddNode(name, region, addr, grp.BandwidthMbit*1e6/8, c)
			c.newConsensus()
			start := grp.Start.Duration
			if grp.Spread.Duration > 0 {
				start += time.Duration(c.rand.Uint64() % uint64(grp.Spread.Duration))
			}
			w.sim.After(start, c.begin)
			w.clients = append(w.clients, c)
			i++
		}
	}
	w.m.Clients = len(w.clients)
}

// begin starts the client's traffic model.
func (c *Client) begin() {
	if c.w.trafficStopped() {
		return
	}
	c.maintain()
	g := c.group
	switch g.Model {
	case "onionperf":
		var step func(i int)
		step = func(i int) {
			size := g.SizesKiB[i%len(g.SizesKiB)] << 10
			c.startFetch(report.SizeLabel(size), size, 0, nil)
			c.w.sim.After(g.Interval.Duration, func() { step(i + 1) })
		}
		step(0)
	case "bulk":
		var again func()
		again = func() { c.startFetch("bulk", g.SizeKiB<<10, 0, again) }
		again()
	case "web":
		// One session per user the client stands for; the first starts at
		// once, the others after a think time, so they do not march in step.
		for u := range g.Users {
			iso := 0
			if g.Users > 1 {
				iso = u + 1
			}
			var page func()
			page = func() {
				kib := c.rand.LogNormal(float64(g.PageKiB), 1)
				size := int(min(max(kib, 1), 20<<10) * 1024)
				c.startFetch("web", size, iso, func() { c.w.sim.After(c.rand.Exp(g.Think.Duration), page) })
			}
			if u == 0 {
				page()
			} else {
				c.w.sim.After(c.rand.Exp(g.Think.Duration), page)
			}
		}
	}
}

// startFetch begins a fetch of size bytes for session iso; next runs
// when it is over.
func (c *Client) startFetch(label string, size, iso int, next func()) {
	if c.w.trafficStopped() {
		return
	}
	f := &fetch{c: c, label: label, size: size, started: c.now(), next: next, iso: iso,
		server: c.w.servers[c.rand.IntN(len(c.w.servers))]}
	c.w.m.Fetch(label).Started++
	f.timer = c.w.sim.After(fetchTimeout(size), func() { c.fail(f, "fetch: timeout") })
	c.attach(f)
}

// attach puts f on a usable circuit, or queues it for the next one.
func (c *Client) attach(f *fetch) {
	if f.done {
		return
	}
	circ := c.usable(f.iso)
	if circ == nil {
		c.waiting = append(c.waiting, f)
		if c.needBuild() && c.relaunch == nil {
			c.launch()
		}
		return
	}
	circ.acts2.Reset()
	id, err := circ.cc.OpenStream(f.server.name, uint16(c.group.Port), &circ.acts2)
	circ.pathUse.StreamRequested()
	if err != nil {
		c.fail(f, "stream: open")
		return
	}
	if circ.dirty.IsZero() {
		circ.dirty, circ.iso = c.now(), f.iso
	}
	f.circ, f.id = circ, id
	circ.fetches = append(circ.fetches, f)
	c.sendAll(circ, circ.acts2.ToLink)
	c.maintain()
}

// connected sends the request.
func (c *Client) connected(circ *ccirc, f *fetch) {
	circ.acts2.Reset()
	line := "GET " + strconv.Itoa(f.size)
	if v := c.w.vopr; v != nil {
		line += " " + strconv.FormatUint(v.fetchKey(f), 10)
	}
	req := []byte(line + "\n")
	if _, err := circ.cc.PackageData(f.id, req, &circ.acts2); err != nil {
		c.kill(circ, "protocol error", true)
		return
	}
	c.sendAll(circ, circ.acts2.ToLink)
}

// received counts n bytes of f's answer.
func (c *Client) received(f *fetch, n int) {
	if f.done {
		return
	}
	now := c.now()
	c.w.m.AddGoodput(c.w.sim.Elapsed().Seconds(), n)
	if !f.first {
		f.first = true
		c.w.m.Fetch(f.label).TTFB = append(c.w.m.Fetch(f.label).TTFB, now.Sub(f.started).Seconds())
	}
	f.received += n
	if f.received >= f.size {
		st := c.w.m.Fetch(f.label)
		st.Completed++
		st.Seconds = append(st.Seconds, now.Sub(f.started).Seconds())
		c.finish(f)
	}
}

// ended handles the exit's END for f.
func (c *Client) ended(f *fetch, reason circuit.EndReason) {
	c.detach(f)
	if !f.done {
		c.fail(f, fmt.Sprintf("stream: end reason %d", reason))
	}
}

// fail records f as failed with cause and closes its stream.
func (c *Client) fail(f *fetch, cause string) {
	if f.done {
		return
	}
	c.w.m.Fetch(f.label).Failed++
	c.w.m.Error(cause)
	if circ := f.circ; circ != nil && !circ.dead && circ.fetch(f.id) != nil {
		circ.acts2.Reset()
		if circ.cc.CloseStream(f.id, &circ.acts2) == nil {
			c.sendAll(circ, circ.acts2.ToLink)
		}
		c.detach(f)
	}
	for i, x := range c.waiting {
		if x == f {
			c.waiting = append(c.waiting[:i], c.waiting[i+1:]...)
			break
		}
	}
	c.finish(f)
}

func (c *Client) detach(f *fetch) {
	if circ := f.circ; circ != nil {
		for i, x := range circ.fetches {
			if x == f {
				circ.fetches = append(circ.fetches[:i], circ.fetches[i+1:]...)
				break
			}
		}
	}
}

// finish ends f and runs the model's next step.
func (c *Client) finish(f *fetch) {
	f.done = true
	f.timer.Stop()
	if f.next != nil {
		next := f.next
		f.next = nil
		c.w.sim.After(0, next)
	}
}
