package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
	"github.com/tokenkeeper/tokenkeeper/sessionpage"
	"github.com/tokenkeeper/tokenkeeper/spawnerhook"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// pageKeyLabel names what the page's key is derived for.
const pageKeyLabel = "tokenkeeper service page cookies"

// pageKey derives the service page's cookie and CSRF key from the first
// state key: page logins survive a restart, and end when the state key is
// rotated out.
func pageKey(cfg config.Config) ([]byte, error) {
	keys, err := cfg.StateKeys()
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, keys[0])
	m.Write([]byte(pageKeyLabel))
	return m.Sum(nil), nil
}

// newPage builds the service page from the refresher, the hub client and
// the token files the keepers report.
// With the Keycloak admin client, a user's view shows their Keycloak
// sessions (found by the subject of the user's latest session in the
// store) and when each runs out.
func newPage(cfg config.Config, client *http.Client, hub *hubclient.Client, r *refresh.Refresher, db *store.Store,
	admin *serviceaccount.Admin, files *spawnerhook.TokenFiles, log *slog.Logger) (*sessionpage.Page, error) {
	key, err := pageKey(cfg)
	if err != nil {
		return nil, err
	}
	d := sessionpage.Deps{
		Identify: hub.Identify, Sessions: r.Sessions, Session: r.Session, Health: r.Health,
		ProblemText: spawnerhook.ProblemText, Guard: r.GuardState, Audit: r.Audit,
		RefreshNow: r.RefreshNow, LogoutEverywhere: r.LogoutEverywhere, ReleaseGuard: r.ReleaseGuard,
		TokenFiles: files.Of,
		Audiences:  cfg.Audiences, Providers: cfg.IdentityProviders, StopsServers: cfg.StopServers,
		HubPrefix: cfg.Hub.HubPrefix(), Prefix: cfg.Hub.Prefix, HubAPIURL: cfg.Hub.APIURL,
		ClientID: cfg.Hub.ClientID, ClientSecret: cfg.Hub.APIToken.Reveal(), CallbackURL: cfg.Hub.OAuthCallbackURL,
		HTTPClient: client, Key: key, Now: time.Now, Logger: log,
	}
	if admin != nil {
		d.KeycloakSessions = func(ctx context.Context, user string) ([]serviceaccount.Session, error) {
			sub, err := db.Subject(ctx, user)
			if err != nil || sub == "" {
				return nil, err
			}
			return admin.Sessions(ctx, sub)
		}
		d.SSOLimits = serviceaccount.NewSSOLimits(admin.RealmSettings, time.Now).Get
	}
	return sessionpage.New(d)
}
