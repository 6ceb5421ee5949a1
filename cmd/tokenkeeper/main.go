// Command tokenkeeper keeps JupyterHub users' Keycloak tokens fresh. It runs
// as a JupyterHub managed service; see the README for the configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
	"github.com/tokenkeeper/tokenkeeper/spawnerhook"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tokenkeeper:", err)
		if errors.As(err, new(*config.UsageError)) {
			os.Exit(2) // a command line that could not be read, as the flag package exits
		}
		os.Exit(1)
	}
}

// run is the whole program, with the process's fundamentals as parameters.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "token" {
		return runToken(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "doctor" {
		return runDoctor(ctx, args[1:], getenv, stdout, stderr)
	}
	cfg, opts, err := config.Load(args, getenv, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil // the usage is printed
	case opts.Version:
		fmt.Fprintln(stdout, "tokenkeeper", version)
		return nil
	}
	// Under the hub a problem is answered at the service's address instead
	// of exiting, unless exit_on_error asks to exit (for a container that
	// Kubernetes restarts). cfg may be incomplete here: ExitsOnError reads
	// the variable itself too.
	hold := underHub(getenv) && !cfg.ExitsOnError(getenv)
	if err != nil && hold && !opts.CheckConfig && !slices.Contains(args, "--check-config") {
		return holdBadConfig(ctx, err, getenv, stderr)
	}
	if uerr := (*config.UsageError)(nil); errors.As(err, &uerr) {
		return uerr
	}
	if err != nil {
		return configError(err)
	}
	if opts.CheckConfig {
		fmt.Fprintln(stdout, "configuration OK")
		return nil
	}
	level, _ := config.ParseLevel(cfg.LogLevel)
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	return serve(ctx, cfg, log, hold)
}

// configError lists every configuration problem on its own line.
func configError(err error) error {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		lines = append(lines, "  - "+l)
	}
	return fmt.Errorf("bad configuration:\n%s", strings.Join(lines, "\n"))
}

// app is tokenkeeper once started: the refresher, its HTTP API and store.
type app struct {
	r       *refresh.Refresher
	handler http.Handler
	db      *store.Store
}

// serve runs the HTTP API and the refresh schedule until ctx ends. It
// listens first and answers 503 while starting. When starting fails and
// hold is set (under the hub, without exit_on_error), it keeps answering
// with the problems instead of exiting, because JupyterHub shuts down when
// a managed service exits.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, hold bool) error {
	ln, err := net.Listen("tcp", listenAddr(cfg.Hub.ServiceURL))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	sw := &switchHandler{}
	sw.set(problemHandler(cfg.Hub.Prefix, []problem{{Class: "starting", Message: "tokenkeeper is starting."}}))
	var started *app
	ready := make(chan *refresh.Refresher, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveHTTP(gctx, newServer(cfg, sw), ln) })
	g.Go(func() error { return stopAtSignal(gctx, ready, log) })
	g.Go(func() error {
		a, err := start(gctx, cfg, log)
		if err != nil {
			return holdOrFail(gctx, err, sw, cfg.Hub.Prefix, log, hold)
		}
		started = a
		ready <- a.r
		sw.set(a.handler)
		log.Info("tokenkeeper started", "version", version, "listen", ln.Addr().String(),
			"prefix", cfg.Hub.Prefix, "issuer", cfg.IssuerURL, "keep", cfg.Keep)
		if err := a.r.Replay(gctx); err != nil {
			log.Error("replaying pending write-backs", "err", err)
		}
		return schedule(gctx, time.Duration(cfg.SweepInterval), a.r, log)
	})
	err = g.Wait()
	if started != nil {
		// Stopped already at the signal; this covers a start that raced it.
		err = errors.Join(err, stopRefresher(ctx, started.r, log), started.db.Close())
	}
	return err
}

// stopAtSignal stops the refresher as soon as ctx ends (the first SIGINT or
// SIGTERM), alongside the HTTP server's drain, so that the grants in flight
// are journaled within the hub's grace.
func stopAtSignal(ctx context.Context, ready <-chan *refresh.Refresher, log *slog.Logger) error {
	select {
	case r := <-ready:
		<-ctx.Done()
		return stopRefresher(ctx, r, log)
	case <-ctx.Done():
		return nil
	}
}

// start opens the store, checks tokenkeeper's hub scopes (retrying while
// the hub cannot be reached) and builds the refresher and the HTTP API.
func start(ctx context.Context, cfg config.Config, log *slog.Logger) (*app, error) {
	db, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return nil, &startError{class: "database", err: err}
	}
	a, err := build(ctx, cfg, log, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	return a, nil
}

func build(ctx context.Context, cfg config.Config, log *slog.Logger, db *store.Store) (*app, error) {
	client := newHTTPClient(cfg)
	reg := prometheus.NewRegistry()
	registerProcess(reg, version)
	hub := hubclient.New(cfg.Hub.APIURL, cfg.Hub.APIToken.Reveal(),
		hubclient.WithHTTPClient(client), hubclient.WithConcurrency(cfg.Concurrency),
		hubclient.WithRateLimit(cfg.HubMaxRPS),
		hubclient.WithObserver(hubObserver(reg)))
	var excess []string
	if err := retryHub(ctx, log, func(ctx context.Context) (err error) {
		excess, err = checkScopes(ctx, hub, cfg)
		return err
	}); err != nil {
		return nil, &startError{class: "hub_scopes", err: err}
	}
	if len(excess) > 0 {
		log.Warn("tokenkeeper's hub token holds more than its settings need; take it away in jupyterhub_config.py",
			"excess", strings.Join(excess, ", "))
	}
	kc := keycloak.New(cfg.IssuerURL, cfg.ClientID, cfg.ClientSecret, client)
	sa := serviceAccount(ctx, cfg, client, kc)
	opts, err := refreshOptions(cfg, log)
	if err != nil {
		return nil, err
	}
	opts.Exchange, opts.Audiences = kc.Exchange, cfg.Audiences
	opts.ExcessScopes = excess
	opts.UserGone = hub.Forget
	opts.Introspect = func(ctx context.Context, refresh config.Secret) (bool, error) {
		return kc.Introspect(ctx, refresh, "refresh_token")
	}
	opts.ProviderToken, opts.Providers = kc.ProviderToken, cfg.IdentityProviders
	admin, err := keycloakAdmin(ctx, cfg, client, kc)
	if err != nil {
		return nil, err
	}
	if admin != nil && cfg.EndKeycloakSessions {
		opts.Actions.EndSessions = admin.LogoutUser
	}
	opts.Actions.EndSession = kc.EndSession
	opts.Metrics = refresh.NewMetrics(reg)
	r, err := refresh.New(ctx, hub, hub, kc.Refresh, db, opts)
	if err != nil {
		return nil, err
	}
	reg.MustRegister(r)
	deps := spawnerhook.Deps{
		Identify: hub.Identify, Fresh: r.Fresh, Derived: r.Derived, Health: r.Health,
		BackchannelLogout: func(ctx context.Context, raw string) ([]string, error) {
			return r.BackchannelLogout(ctx, raw, kc.VerifyLogout)
		},
		Metrics:      promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Requests:     spawnerhook.NewRequestMetrics(reg),
		AccessScopes: cfg.Hub.AccessScopes, SpawnSecret: cfg.SpawnSecret.Reveal(),
		Name: cfg.Hub.Name, Version: version, Logger: log, Now: time.Now,
	}
	deps.Status = r.Status
	deps.ReleaseGuard = r.ReleaseGuard
	deps.TokenFiles, deps.WaitLogout, deps.Shutdown = spawnerhook.NewTokenFiles(), r.WaitLogout, ctx
	page, err := newPage(cfg, client, hub, r, db, admin, deps.TokenFiles, log)
	if err != nil {
		return nil, err
	}
	deps.Page = page.Routes
	if sa != nil {
		exchange := kc.As(cfg.ServiceAccountClientID, cfg.ServiceAccountSecret).Exchange
		deps.ServiceToken = serviceaccount.NewHandout(sa, exchange, cfg.ServiceTokenAudiences, time.Now).Token
	}
	if admin != nil {
		deps.Sessions = admin.Sessions
	}
	if cfg.JobAPIURL != "" {
		jobs := serviceaccount.NewJobs(cfg.JobAPIURL, sa.AccessToken, client, time.Duration(cfg.JobPollInterval), time.Now)
		deps.JobStatus = jobs.Status
	}
	return &app{r: r, handler: spawnerhook.NewHandler(cfg.Hub.Prefix, deps), db: db}, nil
}

// registerProcess registers with reg the standard process and Go runtime
// collectors and tokenkeeper_build_info, which is 1 and names the version
// and the Go release it was built with.
func registerProcess(reg prometheus.Registerer, version string) {
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "tokenkeeper_build_info",
		Help:        "Always 1; its labels name tokenkeeper's version and the Go release it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	info.Set(1)
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector(), info)
}

// stopWait is how long a stop lets the grants in flight finish before it
// cancels them: longer than one request's http_timeout (10 s by default),
// so that with the defaults a grant sent before the signal gets its answer.
// JupyterHub sends a managed service SIGINT, SIGTERM 10 s later and SIGKILL
// 5 s after that; the refresher needs at most 2 s more to journal what it
// has (refresh's abortWait), within the 15 s.
const stopWait = 11 * time.Second

// stopRefresher lets the grants in flight finish and be journaled, within
// stopWait, before the store closes; grants still waiting for Keycloak then
// are cancelled, and their intents settle them at the next start.
func stopRefresher(ctx context.Context, r *refresh.Refresher, log *slog.Logger) error {
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopWait)
	defer cancel()
	if err := r.Stop(stopCtx); err != nil {
		return err
	}
	log.Info("stopped: no grant in flight")
	return nil
}

// serviceAccount returns the configured service account, or nil. Its token
// is handed out (service-token) and used for the job API.
func serviceAccount(ctx context.Context, cfg config.Config, client *http.Client, kc *keycloak.Client) *serviceaccount.Account {
	if cfg.ServiceAccountClientID == "" {
		return nil
	}
	return serviceaccount.New(ctx, client, cfg.ServiceAccountClientID, cfg.ServiceAccountSecret, kc.Endpoint, 15*time.Second)
}

// keycloakAdmin returns the Keycloak admin API client, authenticated as the
// admin client (never the service account), or nil when none is configured.
func keycloakAdmin(ctx context.Context, cfg config.Config, client *http.Client, kc *keycloak.Client) (*serviceaccount.Admin, error) {
	if cfg.AdminClientID == "" {
		return nil, nil
	}
	account := serviceaccount.New(ctx, client, cfg.AdminClientID, cfg.AdminClientSecret, kc.Endpoint, 15*time.Second)
	return serviceaccount.NewAdmin(cfg.IssuerURL, client, account.AccessToken)
}

// newHTTPClient returns the client for the hub, Keycloak and the job API. It
// follows no redirect: x/oauth2 and go-oidc use it too, and a redirected
// token request would carry the client secret and a refresh token to
// wherever the Location points.
func newHTTPClient(cfg config.Config) *http.Client {
	return &http.Client{
		Timeout:       time.Duration(cfg.HTTPTimeout),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// newServer returns the HTTP server for h. Its write timeout outlasts the
// slowest fresh-token: a hub lookup, reading auth_state, a grant that may
// wait 3 × http_timeout, and the write-back.
func newServer(cfg config.Config, h http.Handler) *http.Server {
	t := time.Duration(cfg.HTTPTimeout)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      6*t + 10*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

func refreshOptions(cfg config.Config, log *slog.Logger) (refresh.Options, error) {
	keys, err := cfg.StateKeys()
	if err != nil {
		return refresh.Options{}, err
	}
	keyring, err := refresh.NewKeyring(keys...)
	if err != nil {
		return refresh.Options{}, err
	}
	return refresh.Options{
		Keep:          cfg.Keep,
		Schedule:      refresh.Schedule{Window: time.Duration(cfg.RefreshWindow), Margin: time.Duration(cfg.SweepInterval) + 3*time.Duration(cfg.HTTPTimeout)},
		Recheck:       max(time.Minute, 4*time.Duration(cfg.SweepInterval)),
		Concurrency:   cfg.Concurrency,
		GrantTimeout:  3 * time.Duration(cfg.HTTPTimeout),
		MaxReuse:      cfg.RefreshTokenMaxReuse,
		RefreshAdmins: cfg.RefreshAdmins,
		HubRPS:        hubclient.RefresherRate(cfg.HubMaxRPS),
		SweepInterval: time.Duration(cfg.SweepInterval),
		Actions:       refresh.LogoutActions{RevokeTokens: cfg.RevokeTokens, StopServers: cfg.StopServers},
		Guard:         refresh.Guard{Min: cfg.GuardMin, Fraction: cfg.GuardFraction},
		Keys:          keyring,
		Now:           time.Now,
		Rand:          newRand(),
		Logger:        log,
	}, nil
}

// listenAddr returns host:port of the service URL.
func listenAddr(serviceURL string) string {
	u, _ := url.Parse(serviceURL) // validated by config
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// serveHTTP serves until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// schedule runs the sweep at start and then every interval, never two at once.
func schedule(ctx context.Context, every time.Duration, r *refresh.Refresher, log *slog.Logger) error {
	s, err := gocron.NewScheduler()
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	_, err = s.NewJob(gocron.DurationJob(every),
		gocron.NewTask(func(ctx context.Context) {
			if err := r.Sweep(ctx); err != nil {
				log.Warn("sweep failed", "err", err)
			}
		}),
		gocron.WithName("sweep"),
		gocron.WithSingletonMode(gocron.LimitModeReschedule),
		gocron.WithStartAt(gocron.WithStartImmediately()),
	)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	s.Start()
	<-ctx.Done()
	if err := s.Shutdown(); err != nil {
		return fmt.Errorf("scheduler shutdown: %w", err)
	}
	return nil
}
