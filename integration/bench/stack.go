package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tokenkeeper/tokenkeeper/integration"
)

// refreshWindow is tokenkeeper's refresh_window in the bench stack (its default).
const refreshWindow = 60 * time.Second

// benchStack is the real stack with the list gate and the counting proxy
// between tokenkeeper and the hub's API: tokenkeeper → gate → proxy → hub.
type benchStack struct {
	*integration.Stack
	proxy  *integration.HubProxy
	gate   *listGate
	log    *refreshLog
	runDir string
	up     time.Duration
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// startStack starts the proxy, the gate and the stack with tokenkeeper's
// defaults except keep=all and the hub budget, lets the hub's client log in
// on this port base, and gives the realm Keycloak's default lifetimes.
func startStack(ctx context.Context, repo string, o options) (_ *benchStack, err error) {
	b := &benchStack{runDir: filepath.Join(repo, ".cache", "bench", time.Now().Format("20060102-150405"))}
	defer func() {
		if err != nil {
			b.stop()
		}
	}()
	base := o.portBase
	if b.proxy, err = integration.StartHubProxy(loopback(base+40), "http://"+loopback(base+81)); err != nil {
		return nil, fmt.Errorf("hub proxy: %w", err)
	}
	if b.gate, err = startListGate(loopback(base+41), "http://"+loopback(base+40)); err != nil {
		return nil, err
	}
	b.Stack, err = integration.New(integration.Config{
		Repo: repo, Cache: integration.DefaultCache(), RunDir: b.runDir, PortBase: base,
		Env: []string{
			"TOKENKEEPER_HUB_API_URL=" + b.gate.URL(), "TOKENKEEPER_KEEP=all",
			"TOKENKEEPER_SWEEP_INTERVAL=" + o.sweep.String(),
			"TOKENKEEPER_REFRESH_WINDOW=" + refreshWindow.String(), "TOKENKEEPER_LOG_LEVEL=info",
			"TOKENKEEPER_HUB_MAX_RPS=" + strconv.FormatFloat(o.hubRPS, 'f', -1, 64),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	start := time.Now()
	if err := b.Start(ctx); err != nil {
		return nil, fmt.Errorf("stack did not start (logs in %s): %w", b.runDir, err)
	}
	b.up = time.Since(start)
	b.log = &refreshLog{path: b.HubLog()}
	if err := configureClient(ctx, b.Stack); err != nil {
		return nil, err
	}
	return b, useRealmDefaults(ctx, b.Stack)
}

// stop stops everything startStack started.
func (b *benchStack) stop() {
	if b.Stack != nil {
		b.Stack.Stop()
	}
	if b.gate != nil {
		b.gate.Close()
	}
	if b.proxy != nil {
		b.proxy.Close()
	}
}

// configureClient lets the hub's client redirect to this stack's hub and
// take password grants, for the bench's synthetic users' sessions.
func configureClient(ctx context.Context, s *integration.Stack) error {
	var clients []map[string]any
	if err := s.KeycloakAdmin(ctx, http.MethodGet, "/clients?clientId=jupyterhub", nil, &clients); err != nil {
		return fmt.Errorf("read the jupyterhub client: %w", err)
	}
	if len(clients) != 1 {
		return errors.New("read the jupyterhub client: not found")
	}
	c := clients[0]
	uris, _ := c["redirectUris"].([]any)
	c["redirectUris"] = append(uris, s.HubURL()+"/hub/oauth_callback")
	c["directAccessGrantsEnabled"] = true
	id, _ := c["id"].(string)
	if err := s.KeycloakAdmin(ctx, http.MethodPut, "/clients/"+id, c, nil); err != nil {
		return fmt.Errorf("update the jupyterhub client: %w", err)
	}
	return nil
}

// Keycloak's defaults for a realm's session lifetimes, which the bench's
// realm takes instead of the test realm's short ones.
const (
	realmSSOIdle = 30 * time.Minute
	realmSSOMax  = 10 * time.Hour
)

// useRealmDefaults gives the realm Keycloak's default lifetimes: 5-minute
// access tokens, 30 minutes of SSO idle, 10 hours of SSO maximum.
func useRealmDefaults(ctx context.Context, s *integration.Stack) error {
	body := map[string]any{"accessTokenLifespan": int(realmLife.Seconds()),
		"ssoSessionIdleTimeout": int(realmSSOIdle.Seconds()), "ssoSessionMaxLifespan": int(realmSSOMax.Seconds())}
	if err := s.KeycloakAdmin(ctx, http.MethodPut, "", body, nil); err != nil {
		return fmt.Errorf("set the realm's lifetimes: %w", err)
	}
	var realm struct {
		AccessTokenLifespan int  `json:"accessTokenLifespan"`
		SSOIdle             int  `json:"ssoSessionIdleTimeout"`
		RevokeRefreshToken  bool `json:"revokeRefreshToken"`
	}
	if err := s.KeycloakAdmin(ctx, http.MethodGet, "", nil, &realm); err != nil {
		return fmt.Errorf("read the realm: %w", err)
	}
	if realm.AccessTokenLifespan != int(realmLife.Seconds()) || realm.SSOIdle != int(realmSSOIdle.Seconds()) || !realm.RevokeRefreshToken {
		return fmt.Errorf("realm after the update: access token lifespan %d s, SSO idle %d s, refresh-token rotation %v",
			realm.AccessTokenLifespan, realm.SSOIdle, realm.RevokeRefreshToken)
	}
	return nil
}

// counts are tokenkeeper's cumulative hub requests (through the proxy),
// Keycloak grants (its metrics) and "refreshed" log lines at one moment.
type counts struct {
	At                    time.Time
	Lists, Reads, Patches int64
	Grants, FailedGrants  float64
	Refreshed             int
}

func (b *benchStack) snapshot(ctx context.Context) (counts, error) {
	m, err := scrape(ctx, b.ServiceURL()+"metrics")
	if err != nil {
		return counts{}, err
	}
	if err := b.log.read(); err != nil {
		return counts{}, err
	}
	c := counts{At: time.Now(), Lists: b.proxy.Lists.Load(), Reads: b.proxy.Reads.Load(),
		Patches: b.proxy.Patch.Load(), Refreshed: len(b.log.lines)}
	c.Grants, c.FailedGrants = m.grants()
	return c, nil
}

// sub returns the counts between earlier and c.
func (c counts) sub(earlier counts) counts {
	return counts{
		At: c.At, Lists: c.Lists - earlier.Lists, Reads: c.Reads - earlier.Reads,
		Patches: c.Patches - earlier.Patches, Grants: c.Grants - earlier.Grants,
		FailedGrants: c.FailedGrants - earlier.FailedGrants, Refreshed: c.Refreshed - earlier.Refreshed,
	}
}

// waitUntil returns at t, or when ctx ends.
func waitUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
