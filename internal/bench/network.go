package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay"
	"github.com/veilnet/veil/relay/authority"
)

// network is the local veil network under test: authorities in this
// process, each relay in its own process.
type network struct {
	dir     string
	file    *directory.Network
	auths   []*authority.Authority
	authLns []net.Listener
	relays  []*relayProc
}

// relayProc is one relay process.
type relayProc struct {
	Name    string
	Exit    bool
	Addr    netip.AddrPort
	Metrics string // host:port of its metrics endpoint
	config  string
	cmd     *exec.Cmd
	done    chan struct{}
}

// relayAddr gives relay i its own loopback /16, as sim.Testnet does, so
// the client's one-relay-per-/16 path rule holds.
func relayAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, byte(i + 1), 0, 1}) }

// freePort returns a port free on addr at the time of asking.
func freePort(addr netip.Addr) (uint16, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).AddrPort().Port(), nil
}

// prepare makes every key, the network file and the relays' configuration
// files: the work done before the clock starts (the Tor harness also makes
// its keys before its t0).
func prepare(cfg *Config) (*network, error) {
	n := &network{dir: cfg.Dir, file: &directory.Network{Name: "bench"}}
	var ids []ed25519.PrivateKey
	for i := range cfg.Authorities {
		id, err := crypto.LoadOrCreateIdentity(filepath.Join(n.dir, fmt.Sprintf("authority%d", i+1), "identity.key"), rand.Reader)
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
		n.authLns = append(n.authLns, ln)
		n.file.Authorities = append(n.file.Authorities, directory.AuthorityInfo{
			Name: fmt.Sprintf("auth%d", i+1), Address: ln.Addr().String(), Identity: id.Public().(ed25519.PublicKey)})
	}
	netPath := filepath.Join(n.dir, "network.toml")
	if err := os.WriteFile(netPath, n.file.Encode(), 0o644); err != nil {
		return nil, err
	}
	for i, id := range ids {
		au, err := authority.New(authority.Config{
			Identity: id, Network: n.file, Name: n.file.Authorities[i].Name, Listener: n.authLns[i],
			Interval: cfg.Interval, VoteDelay: cfg.Interval / 5, SigDelay: cfg.Interval / 5,
			TestingAllFlags: true, EarlyRelays: cfg.Relays,
			Logger: cfg.Logger.With("node", n.file.Authorities[i].Name),
		})
		if err != nil {
			return nil, err
		}
		n.auths = append(n.auths, au)
	}
	for i := range cfg.Relays {
		r, err := prepareRelay(n.dir, netPath, i, i < cfg.Exits)
		if err != nil {
			return nil, err
		}
		n.relays = append(n.relays, r)
	}
	return n, nil
}

// prepareRelay creates relay i's keys and configuration file.
func prepareRelay(dir, netPath string, i int, exit bool) (*relayProc, error) {
	name := fmt.Sprintf("relay%d", i+1)
	if exit {
		name = fmt.Sprintf("exit%d", i+1)
	}
	rdir := filepath.Join(dir, name)
	if _, err := relay.LoadOrCreateKeys(rdir, rand.Reader); err != nil {
		return nil, err
	}
	addr := relayAddr(i)
	port, err := freePort(addr)
	if err != nil {
		return nil, err
	}
	mport, err := freePort(addr)
	if err != nil {
		return nil, err
	}
	r := &relayProc{Name: name, Exit: exit, Addr: netip.AddrPortFrom(addr, port),
		Metrics: netip.AddrPortFrom(addr, mport).String(), config: filepath.Join(rdir, "relay.toml")}
	// No bandwidth cap to speak of (Tor's default BandwidthRate is 1 GB/s
	// too), a creation rate limit that a benchmark of thousands of
	// circuits from one address does not hit, and a short drain.
	var b strings.Builder
	fmt.Fprintf(&b, "nickname = %q\ndata_directory = %q\nnetwork_file = %q\n", name, rdir, netPath)
	fmt.Fprintf(&b, "listen = [%q]\nadvertise = %q\nmetrics_listen = %q\n", r.Addr.String(), r.Addr.String(), r.Metrics)
	b.WriteString("log_level = \"warn\"\ndrain_timeout = \"1s\"\n")
	b.WriteString("[bandwidth]\nrate = 1073741824\n")
	if exit {
		b.WriteString("[exit]\npolicy = [\"accept *:*\"]\n")
	}
	b.WriteString("[limits]\ncreate_rate = 1000000\ncreate_burst = 1000000\n")
	b.WriteString("[private_network]\nexit_to_private = true\nextend_to_private = true\n")
	if err := os.WriteFile(r.config, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	return r, nil
}

// start runs the authorities and starts every relay process.
func (n *network) start(ctx context.Context, cfg *Config, run func(func(context.Context) error)) error {
	for _, a := range n.auths {
		run(a.Run)
	}
	for _, r := range n.relays {
		cmd := cfg.RelayCommand(r.config)
		logf, err := os.Create(filepath.Join(filepath.Dir(r.config), "relay.log"))
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		// The relays die with the benchmark even if it is killed.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("bench: starting %s: %w", r.Name, err)
		}
		r.cmd, r.done = cmd, make(chan struct{})
		go func() {
			cmd.Wait()
			logf.Close()
			close(r.done)
		}()
	}
	return nil
}

// waitConsensus waits until an authority serves a consensus.
func (n *network) waitConsensus(ctx context.Context) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		for _, a := range n.auths {
			if a.HasConsensus() {
				return nil
			}
		}
		for _, r := range n.relays {
			select {
			case <-r.done:
				return fmt.Errorf("bench: %s exited (see %s)", r.Name, filepath.Join(filepath.Dir(r.config), "relay.log"))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: no consensus: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// pids returns the relay processes' PIDs.
func (n *network) pids() []int {
	var out []int
	for _, r := range n.relays {
		if r.cmd != nil && r.cmd.Process != nil {
			out = append(out, r.cmd.Process.Pid)
		}
	}
	return out
}

// stopRelays sends SIGTERM to every relay it started, waits up to 10 s,
// then kills the rest, each by its PID.
func (n *network) stopRelays(log *slog.Logger) {
	for _, r := range n.relays {
		if r.cmd != nil && r.cmd.Process != nil {
			r.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	expired := false
	for _, r := range n.relays {
		if r.cmd == nil {
			continue
		}
		if !expired {
			select {
			case <-r.done:
				continue
			case <-timer.C:
				expired = true
			}
		}
		select {
		case <-r.done:
		default:
			log.Warn("relay still running 10 s after SIGTERM; killing it", "relay", r.Name)
			r.cmd.Process.Kill()
			<-r.done
		}
	}
}

// errNoRelayCommand is returned when Config.RelayCommand is missing.
var errNoRelayCommand = errors.New("bench: Config.RelayCommand is required")
