package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/veilnet/veil/relay"
	"github.com/veilnet/veil/relay/config"
	"github.com/veilnet/veil/relay/dircache"
	"github.com/veilnet/veil/relay/exitdns"
	"github.com/veilnet/veil/relay/metrics"
)

// runRelay is `veil relay init|check|run` (docs/operators.md).
func runRelay(ctx context.Context, args []string) error {
	sub, args, err := subcommand(args, "init", "check", "run")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("relay "+sub, flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory to create the relay's keys in (init)")
	cfgPath := fs.String("config", "", "configuration file (check, run); see docs/relay-config.md")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch sub {
	case "init":
		if *dir == "" {
			return errors.New("--dir is required")
		}
		keys, err := relay.LoadOrCreateKeys(*dir, rand.Reader)
		if err != nil {
			return err
		}
		fmt.Printf("relay keys in %s\nfingerprint %s\n", *dir, keys.Fingerprint())
		return nil
	case "check":
		cfg, err := loadRelayConfig(*cfgPath)
		if err != nil {
			return err
		}
		if _, err := loadNetwork(cfg.NetworkFile); err != nil {
			return fmt.Errorf("network_file: %w", err)
		}
		fmt.Printf("%s: ok\n", *cfgPath)
		return nil
	}
	cfg, err := loadRelayConfig(*cfgPath)
	if err != nil {
		return err
	}
	return runRelayDaemon(ctx, *cfgPath, cfg)
}

func loadRelayConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, errors.New("--config FILE is required (docs/relay-config.md; docs/relay.example.toml is a start)")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, config.MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	return config.Parse(b)
}

// listenTCP listens on ap: tcp4 or tcp6 (v6-only, so "0.0.0.0:p" and
// "[::]:p" can both be configured).
func listenTCP(ap netip.AddrPort) (net.Listener, error) {
	network := "tcp4"
	if ap.Addr().Is6() {
		network = "tcp6"
	}
	var lc net.ListenConfig
	return lc.Listen(context.Background(), network, ap.String())
}

// runRelayDaemon runs the relay until ctx ends (SIGINT/SIGTERM), then
// drains it; SIGHUP reloads what can change at run time.
func runRelayDaemon(ctx context.Context, cfgPath string, cfg *config.Config) error {
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	keys, err := relay.LoadOrCreateKeys(cfg.DataDir, rand.Reader)
	if err != nil {
		return fmt.Errorf("data_directory: %w", err)
	}
	network, err := loadNetwork(cfg.NetworkFile)
	if err != nil {
		return fmt.Errorf("network_file: %w", err)
	}
	// Shutdown order: stop the helpers, close the HTTP servers, then wait
	// for every goroutine started here.
	var (
		closers []func()
		wg      sync.WaitGroup
	)
	runCtx, stopAux := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		stopAux()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		wg.Wait()
	}()
	var lns []net.Listener
	for _, ap := range cfg.Listen {
		ln, err := listenTCP(ap)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("listen %s: %w", ap, err)
		}
		lns = append(lns, ln)
	}
	m := metrics.New()

	if cfg.MetricsListen.IsValid() {
		srv, err := serveHTTP(cfg.MetricsListen, metricsMux(m), &wg)
		if err != nil {
			closeAll(lns)
			return fmt.Errorf("metrics_listen: %w", err)
		}
		closers = append(closers, func() { shutdownHTTP(srv) })
		if !cfg.MetricsListen.Addr().IsLoopback() {
			log.Warn("metrics are served on a non-loopback address; anyone who can reach it sees the relay's load")
		}
	}
	rcfg := relay.Config{
		Nickname: cfg.Nickname, Identity: keys.Identity, LinkKey: keys.Link, OnionKey: keys.Onion,
		OnionKeyCreated: keys.OnionCreated, PrevOnionKey: keys.PrevOnion, PrevOnionKeyRetired: keys.PrevOnionRetired,
		OnionKeyRotation: cfg.OnionKeyRotation, OnionKeyOverlap: cfg.OnionKeyOverlap, DataDir: cfg.DataDir,
		Listener: lns[0], Listeners: lns[1:], Advertise: cfg.Advertise,
		Bandwidth: cfg.AdvertisedBandwidth, BandwidthRate: cfg.BandwidthRate, BandwidthBurst: cfg.BandwidthBurst,
		ExitPolicy: cfg.ExitPolicy, AllowPrivateExit: cfg.ExitToPrivate, ExtendAllowPrivate: cfg.ExtendToPrivate,
		Network: network, Family: cfg.Family, Contact: cfg.Contact,
		Logger: log, LogSensitive: cfg.LogSensitive, DNSCacheSize: cfg.DNSCacheSize,
		DNSTimeout: cfg.DNSTimeout, ConnectTimeout: cfg.ConnectTimeout,
		MaxInboundLinks: cfg.MaxInboundLinks, MaxLinksPerAddress: cfg.MaxLinksPerAddress,
		CreateRate: cfg.CreateRate, CreateBurst: cfg.CreateBurst, MaxMemory: cfg.MaxMemory,
		DrainTimeout: cfg.DrainTimeout, Metrics: m,
	}
	// Exits resolve with a stub that reports TTLs and applies no search
	// domains; the system resolver is the fallback.
	if stub, err := exitdns.NewStubFromResolvConf("/etc/resolv.conf"); err == nil {
		rcfg.DNS = stub
	} else if cfg.ExitPolicy.IsExit() {
		log.Warn("exit DNS: using the system resolver (answers cached for a fixed time)", "err", err)
	}
	if cfg.CacheDirectory {
		cache, err := dircache.New(dircache.Config{Network: network, Logger: log.With("component", "dircache")})
		if err != nil {
			closeAll(lns)
			return err
		}
		srv, err := serveHTTP(cfg.DirListen, cache.Handler(), &wg)
		if err != nil {
			closeAll(lns)
			return fmt.Errorf("dir_listen: %w", err)
		}
		closers = append(closers, func() { shutdownHTTP(srv) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cache.Run(runCtx); err != nil && runCtx.Err() == nil {
				log.Error("directory cache stopped", "err", err)
			}
		}()
		rcfg.Directory = cache.Manager()
		rcfg.DirAddress = cfg.DirAdvertise
	}
	r, err := relay.New(rcfg)
	if err != nil {
		closeAll(lns)
		return err
	}
	log.Info("relay starting", "nickname", cfg.Nickname, "fingerprint", keys.Fingerprint().String(),
		"advertise", cfg.Advertise.String(), "exit", cfg.ExitPolicy.IsExit())
	fmt.Printf("relay %s listening on %v\n", keys.Fingerprint(), cfg.Listen)

	wg.Add(1)
	go func() {
		defer wg.Done()
		handleRelaySignals(runCtx, cfgPath, cfg, r, level, log)
	}()
	err = r.Run(ctx)
	stopAux()
	log.Info("relay stopped")
	return err
}

// handleRelaySignals reloads on SIGHUP, and on a second SIGINT/SIGTERM
// (the first starts the drain) closes the relay at once.
func handleRelaySignals(runCtx context.Context, cfgPath string, cur *config.Config, r *relay.Relay, level *slog.LevelVar, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	term := make(chan os.Signal, 2)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	signal.Notify(term, syscall.SIGINT, syscall.SIGTERM)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(hup)
	defer signal.Stop(term)
	defer signal.Stop(usr1)
	terms := 0
	for {
		select {
		case <-runCtx.Done():
			return
		case <-term:
			// main's context sees the same signal and starts the drain;
			// a second one means "now".
			if terms++; terms >= 2 {
				log.Warn("second stop signal: closing without draining")
				r.Abort()
			}
		case <-usr1:
			logMemory(log)
		case <-hup:
			next, err := loadRelayConfig(cfgPath)
			if err != nil {
				log.Error("reload refused; keeping the running configuration", "err", err)
				continue
			}
			applyReload(cur, next, r, level, log)
			cur = next
		}
	}
}

// logMemory runs two full garbage collections and logs what the relay
// holds (SIGUSR1, as Tor's statistics dump): after them, the metrics'
// go_gc_heap_live_bytes is the heap the relay's state really uses. The
// second frees what the first only moved out of sync.Pools (their buffers
// survive one collection).
func logMemory(log *slog.Logger) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	log.Info("memory after a full collection", "heap_live_bytes", ms.HeapAlloc, "heap_inuse_bytes", ms.HeapInuse,
		"stack_inuse_bytes", ms.StackInuse, "sys_bytes", ms.Sys, "goroutines", runtime.NumGoroutine())
}

// applyReload applies what may change while running: bandwidth, exit
// policy, log level. Other changes need a restart, which it says.
func applyReload(cur, next *config.Config, r *relay.Relay, level *slog.LevelVar, log *slog.Logger) {
	level.Set(next.LogLevel)
	if next.BandwidthRate != cur.BandwidthRate || next.BandwidthBurst != cur.BandwidthBurst || next.AdvertisedBandwidth != cur.AdvertisedBandwidth {
		r.SetBandwidth(next.BandwidthRate, next.BandwidthBurst)
	}
	if !next.ExitPolicy.Equal(cur.ExitPolicy) {
		r.SetExitPolicy(next.ExitPolicy)
	}
	var restart []string
	same := func(name string, eq bool) {
		if !eq {
			restart = append(restart, name)
		}
	}
	same("nickname", next.Nickname == cur.Nickname)
	same("data_directory", next.DataDir == cur.DataDir)
	same("network_file", next.NetworkFile == cur.NetworkFile)
	same("listen", fmt.Sprint(next.Listen) == fmt.Sprint(cur.Listen))
	same("advertise", next.Advertise == cur.Advertise)
	same("family", fmt.Sprint(next.Family) == fmt.Sprint(cur.Family))
	same("contact", next.Contact == cur.Contact)
	same("cache_directory", next.CacheDirectory == cur.CacheDirectory && next.DirListen == cur.DirListen)
	same("metrics_listen", next.MetricsListen == cur.MetricsListen)
	same("limits", next.MaxLinksPerAddress == cur.MaxLinksPerAddress && next.MaxInboundLinks == cur.MaxInboundLinks &&
		next.CreateRate == cur.CreateRate && next.CreateBurst == cur.CreateBurst && next.MaxMemory == cur.MaxMemory)
	same("exit dns and timeouts", next.DNSCacheSize == cur.DNSCacheSize && next.DNSTimeout == cur.DNSTimeout && next.ConnectTimeout == cur.ConnectTimeout)
	same("onion_key", next.OnionKeyRotation == cur.OnionKeyRotation && next.OnionKeyOverlap == cur.OnionKeyOverlap)
	same("log_sensitive", next.LogSensitive == cur.LogSensitive)
	same("drain_timeout", next.DrainTimeout == cur.DrainTimeout)
	same("private_network", next.ExitToPrivate == cur.ExitToPrivate && next.ExtendToPrivate == cur.ExtendToPrivate)
	log.Info("configuration reloaded", "bandwidth_rate", next.BandwidthRate, "exit", next.ExitPolicy.IsExit(), "log_level", next.LogLevel.String())
	if len(restart) > 0 {
		log.Warn("some changed settings take effect only after a restart", "fields", restart)
	}
}

func metricsMux(m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	return mux
}

func serveHTTP(ap netip.AddrPort, h http.Handler, wg *sync.WaitGroup) (*http.Server, error) {
	ln, err := listenTCP(ap)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 8 << 10}
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(ln)
	}()
	return srv, nil
}

func shutdownHTTP(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}
