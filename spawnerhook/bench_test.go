package spawnerhook

// Benchmarks of fresh-token's handler in process, without the network: the
// real gin handler with the real identity cache (hubclient) and the real
// token cache (refresh.Refresher), both warm, against a bare net/http
// handler that writes a JSON body of the same shape. They separate the
// handler's own cost from the loopback and process costs that `make bench`
// measures on the real stack.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/store"
)

const (
	benchPrefix = "/services/tokenkeeper/"
	benchUser   = "alice"
	benchToken  = "bench-user-token"
	benchTarget = benchPrefix + "fresh-token?min_valid=1"
)

// benchAccessBytes is the access token's length: the first number of
// TOKENKEEPER_BENCH_TOKEN_SIZES ("access,refresh,id"), else 1300.
func benchAccessBytes(tb testing.TB) int {
	v, _, _ := strings.Cut(os.Getenv("TOKENKEEPER_BENCH_TOKEN_SIZES"), ",")
	if v == "" {
		return 1300
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 100 {
		tb.Fatalf("TOKENKEEPER_BENCH_TOKEN_SIZES: bad access token size %q", v)
	}
	return n
}

// benchAccessToken returns an unsigned JWT valid for an hour, padded to size bytes.
func benchAccessToken(size int) string {
	enc := base64.RawURLEncoding
	now := time.Now()
	claims := fmt.Sprintf(`{"iat":%d,"exp":%d,"sid":"s1","sub":"u1","pad":"`, now.Unix(), now.Add(time.Hour).Unix())
	head := enc.EncodeToString([]byte(`{"alg":"RS256"}`)) + "."
	sig := "." + strings.Repeat("s", 342)
	pad := max(0, (size-len(head)-len(sig))*3/4-len(claims)-2)
	return head + enc.EncodeToString([]byte(claims+strings.Repeat("p", pad)+`"}`)) + sig
}

// benchHubServer answers the two hub calls fresh-token makes when its caches
// are cold: who owns the caller's token, and the user's auth_state.
func benchHubServer(tb testing.TB, access string) *httptest.Server {
	state, _ := json.Marshal(map[string]any{
		"access_token": access, "refresh_token": "r.r.r", "id_token": nil, "scope": []string{"openid"},
		"token_response": map[string]any{"access_token": access, "token_type": "Bearer"},
		"oauth_user":     map[string]any{"preferred_username": benchUser},
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hub/api/user", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(hubclient.Identity{Kind: "user", Name: benchUser,
			Scopes: []string{"access:services!service=tokenkeeper"}})
	})
	mux.HandleFunc("GET /hub/api/users/"+benchUser, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"name": benchUser, "auth_state": json.RawMessage(state)})
	})
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv
}

// benchFreshTokenHandler returns tokenkeeper's API with the caller's
// identity and the user's token cached, as on the real stack after one call.
func benchFreshTokenHandler(b *testing.B) http.Handler {
	b.Helper()
	ctx := context.Background()
	hub := hubclient.New(benchHubServer(b, benchAccessToken(benchAccessBytes(b))).URL+"/hub/api", "service-token")
	db, err := store.Open(ctx, filepath.Join(b.TempDir(), "tk.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	keys, err := refresh.NewKeyring(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	noGrant := func(context.Context, config.Secret) (*oauth2.Token, error) {
		return nil, fmt.Errorf("no grant expected")
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	r, err := refresh.New(ctx, hub, hub, noGrant, db, refresh.Options{
		Keep: config.KeepAll, Schedule: refresh.Schedule{Window: time.Minute}, Recheck: time.Minute, Concurrency: 8,
		GrantTimeout: 30 * time.Second, Keys: keys, Now: time.Now, Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	h := NewHandler(benchPrefix, Deps{
		Identify: hub.Identify, Fresh: r.Fresh, Health: r.Health,
		AccessScopes: []string{"access:services", "access:services!service=tokenkeeper"},
		Name:         "tokenkeeper", Version: "bench", Logger: log, Now: time.Now,
	})
	if code := benchServe(h, "token "+benchToken); code != http.StatusOK {
		b.Fatalf("warm-up fresh-token: %d", code)
	}
	return h
}

func benchServe(h http.Handler, authorization string) int {
	req := httptest.NewRequest(http.MethodGet, benchTarget, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

// benchBareHandler writes a body of fresh-token's shape and size, and nothing else.
func benchBareHandler(access string) http.Handler {
	type body struct {
		User        string `json:"user"`
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresAt   string `json:"expires_at"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(body{User: benchUser, AccessToken: access, TokenType: "Bearer",
			ExpiresAt: time.Now().Add(time.Hour).UTC().Format(time.RFC3339), ExpiresIn: 3600})
	})
}

func benchParallel(b *testing.B, h http.Handler, authorization string) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if code := benchServe(h, authorization); code != http.StatusOK {
				b.Errorf("status %d", code)
				return
			}
		}
	})
}

// BenchmarkFreshTokenHandler serves fresh-token from both caches, in process.
func BenchmarkFreshTokenHandler(b *testing.B) {
	benchParallel(b, benchFreshTokenHandler(b), "token "+benchToken)
}

// BenchmarkBareHandler is the ceiling: a bare handler writing a similar body.
func BenchmarkBareHandler(b *testing.B) {
	benchParallel(b, benchBareHandler(benchAccessToken(benchAccessBytes(b))), "")
}
