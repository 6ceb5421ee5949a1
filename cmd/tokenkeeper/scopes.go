package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

// requiredScopes are the hub scopes tokenkeeper's configuration needs, as the
// hub expands them for GET /user.
func requiredScopes(cfg config.Config) []string {
	s := []string{"list:users", "admin:auth_state", "admin:users", "read:servers"}
	if cfg.RevokeTokens {
		s = append(s, "read:tokens", "tokens")
	}
	if cfg.StopServers {
		s = append(s, "delete:servers")
	}
	return s
}

// powerfulScopes are hub scopes that reach far beyond tokenkeeper's job:
// minting tokens, running or reaching servers, changing groups, services or
// the proxy, shutting the hub down. Held without the setting that needs
// them, they are reported (excessScopes).
var powerfulScopes = []string{
	"tokens", "read:tokens", "delete:servers", "servers", "admin:servers", "access:servers",
	"admin:groups", "groups", "admin:services", "proxy", "shutdown", "admin-ui",
}

// excessScopes returns the powerful scopes id holds that cfg does not need,
// and "the admin role" when id is an admin without refresh_admins.
func excessScopes(id hubclient.Identity, cfg config.Config) []string {
	need := requiredScopes(cfg)
	var out []string
	for _, s := range powerfulScopes {
		if slices.Contains(id.Scopes, s) && !slices.Contains(need, s) {
			out = append(out, s)
		}
	}
	if id.Admin && !cfg.RefreshAdmins {
		out = append(out, "the admin role")
	}
	return out
}

// checkScopes asks the hub which scopes tokenkeeper's token has and fails,
// naming every missing scope, when it has fewer than it needs. It returns
// the powerful scopes it holds beyond those (excessScopes), which do not
// stop it.
func checkScopes(ctx context.Context, hub *hubclient.Client, cfg config.Config) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, err := hub.Self(ctx)
	if err != nil {
		return nil, fmt.Errorf("asking the hub for tokenkeeper's own scopes: %w", err)
	}
	var missing []string
	for _, s := range requiredScopes(cfg) {
		if !slices.Contains(id.Scopes, s) {
			missing = append(missing, s)
		}
	}
	var problems []string
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("the hub gave service %q too few scopes: missing %s "+
			"(use tokenkeeper_hub.service_roles in jupyterhub_config.py)", cfg.Hub.Name, strings.Join(missing, ", ")))
	}
	if cfg.RefreshAdmins && !id.Admin {
		problems = append(problems, fmt.Sprintf("refresh_admins is on but service %q does not hold the admin role, "+
			"without which the hub refuses to store admins' tokens (configure(refresh_admins=True) grants it)", cfg.Hub.Name))
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return excessScopes(id, cfg), nil
}

// hubObserver records hub request durations by route.
func hubObserver(reg prometheus.Registerer) func(string, time.Duration, error) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tokenkeeper_hub_request_duration_seconds", Help: "Duration of requests to the JupyterHub API, by route.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"route", "outcome"})
	reg.MustRegister(h)
	return func(route string, d time.Duration, err error) {
		outcome := "ok"
		if err != nil {
			outcome = "error"
		}
		h.WithLabelValues(route, outcome).Observe(d.Seconds())
	}
}
