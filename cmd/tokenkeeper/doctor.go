package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/doctor"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// errDoctorFailed is `tokenkeeper doctor` finding at least one failure.
var errDoctorFailed = errors.New("doctor: at least one check failed (see the checklist)")

// runDoctor is `tokenkeeper doctor [flags]`: with the daemon's settings, it
// prints the doctor's checklist and fails when a check failed.
func runDoctor(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, _, err := config.Load(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if uerr := (*config.UsageError)(nil); errors.As(err, &uerr) {
		return uerr
	}
	if err != nil {
		doctor.Print(stdout, configProblems(err))
		return errDoctorFailed
	}
	results := doctor.Run(ctx, doctorDeps(ctx, cfg))
	doctor.Print(stdout, results)
	if doctor.Failed(results) {
		return errDoctorFailed
	}
	return nil
}

// configProblems is one failed line per configuration problem; nothing
// else can be checked without a valid configuration.
func configProblems(err error) []doctor.Result {
	var out []doctor.Result
	for _, line := range strings.Split(err.Error(), "\n") {
		out = append(out, doctor.Result{Name: "configuration", Status: doctor.Fail, Detail: line,
			Fix: "correct the setting it names (tokenkeeper --help lists the settings and their variables)"})
	}
	return out
}

// doctorDeps builds the doctor's clients as the daemon builds its own.
func doctorDeps(ctx context.Context, cfg config.Config) doctor.Deps {
	client := newHTTPClient(cfg)
	kc := keycloak.New(cfg.IssuerURL, cfg.ClientID, cfg.ClientSecret, client)
	hub := hubclient.New(cfg.Hub.APIURL, cfg.Hub.APIToken.Reveal(), hubclient.WithHTTPClient(client))
	keys, _ := cfg.StateKeys() // validated by config.Load
	ring, ringErr := refresh.NewKeyring(keys...)
	d := doctor.Deps{
		Config: cfg, Discover: kc.Endpoint, Refresh: kc.Refresh, HubSelf: hub.Self,
		NeededScopes: requiredScopes(cfg),
		ExcessScopes: func(id hubclient.Identity) []string { return excessScopes(id, cfg) },
		Inspect:      store.Inspect,
		OpenJournal: func(p store.Pending) error {
			if ringErr != nil {
				return ringErr
			}
			_, err := ring.Open(p) // the plaintext holds tokens: dropped unread
			return err
		},
		PostForm: func(ctx context.Context, u string) (int, error) { return postEmptyForm(ctx, client, u) },
		Timeout:  3 * time.Duration(cfg.HTTPTimeout),
	}
	if sa := serviceAccount(ctx, cfg, client, kc); sa != nil {
		exchange := kc.As(cfg.ServiceAccountClientID, cfg.ServiceAccountSecret).Exchange
		d.ServiceToken = serviceaccount.NewHandout(sa, exchange, cfg.ServiceTokenAudiences, time.Now).Token
	}
	if admin, err := keycloakAdmin(ctx, cfg, client, kc); err == nil && admin != nil {
		d.Admin = &doctor.Admin{Realm: admin.RealmSettings, Client: admin.ClientSettings, Provider: admin.ProviderSettings}
	}
	return d
}

// postEmptyForm POSTs an empty form to u and returns the answer's status.
func postEmptyForm(ctx context.Context, client *http.Client, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(""))
	if err != nil {
		return 0, fmt.Errorf("post %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}
