package sessionpage

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

const (
	// sessionCookie holds the hub OAuth token, sealed.
	sessionCookie = "tokenkeeper-session"
	// stateCookiePrefix starts the name of a login's state cookie; the
	// rest is the start of its state, so that logins in two tabs do not
	// overwrite each other's (as HubOAuth's random suffix does).
	stateCookiePrefix = "tokenkeeper-oauth-state-"
	// maxSession bounds a session cookie's life, whatever the hub's
	// token's: a visitor whose hub rights were taken away logs in again
	// within this.
	maxSession = 8 * time.Hour
	// stateLife is how long a login may take, as HubOAuth's state cookie.
	stateLife = 10 * time.Minute
	// maxCookie bounds the length of a cookie value opened.
	maxCookie = 4096
)

// errSealed is a cookie that does not open: tampered with, sealed under
// another key or for another purpose, or not a sealed value at all.
var errSealed = errors.New("the cookie does not open")

// sealer seals cookie values with AES-GCM, the purpose (session or state)
// as additional data, so that neither can stand for the other.
type sealer struct{ aead cipher.AEAD }

// newSealer derives the cookies' AES key from key.
func newSealer(key []byte) (sealer, error) {
	block, err := aes.NewCipher(derive(key, "tokenkeeper sessionpage cookie"))
	if err != nil {
		return sealer{}, fmt.Errorf("cookie key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return sealer{}, fmt.Errorf("cookie key: %w", err)
	}
	return sealer{aead}, nil
}

// derive is HMAC-SHA256(key, label): a key of its own per use.
func derive(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// seal returns v as JSON, sealed for purpose, in base64url.
func (s sealer) seal(purpose string, v any) string {
	plain, err := json.Marshal(v)
	if err != nil {
		panic(err) // v is one of this package's cookie types
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(purpose)))
}

// open reverses seal into v; errSealed when value was not sealed for
// purpose with this key.
func (s sealer) open(purpose, value string, v any) error {
	if len(value) > maxCookie {
		return errSealed
	}
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return errSealed
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(purpose))
	if err != nil {
		return errSealed
	}
	if err := json.Unmarshal(plain, v); err != nil {
		return errSealed
	}
	return nil
}

// session is the session cookie's content: the hub OAuth token and when
// the cookie ends, checked here too since a browser may keep a cookie
// past its Max-Age.
type session struct {
	Token   string `json:"t"`
	Expires int64  `json:"e"`
}

// readSession returns the hub OAuth token of r's session cookie, if it
// has a valid one.
func (p *Page) readSession(r *http.Request) (string, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", false
	}
	var s session
	if p.seal.open(sessionCookie, c.Value, &s) != nil || s.Token == "" || !p.d.Now().Before(time.Unix(s.Expires, 0)) {
		return "", false
	}
	return s.Token, true
}

// sessionLife is how long a session cookie lives for a hub token that
// expires in expiresIn seconds (0: the hub did not say): as long as the
// token, at most maxSession.
func sessionLife(expiresIn int64) time.Duration {
	life := time.Duration(expiresIn) * time.Second
	if expiresIn <= 0 || life > maxSession {
		return maxSession
	}
	return life
}

// setSession keeps token in the session cookie for life.
func (p *Page) setSession(w http.ResponseWriter, r *http.Request, token string, life time.Duration) {
	exp := p.d.Now().Add(life)
	value := p.seal.seal(sessionCookie, session{Token: token, Expires: exp.Unix()})
	http.SetCookie(w, p.cookie(r, sessionCookie, value, life))
}

// clearSession removes the session cookie.
func (p *Page) clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, p.cookie(r, sessionCookie, "", -1))
}

// cookie is one of the page's cookies: HttpOnly, SameSite=Lax, on the
// prefix, Secure by secureCookie; life < 0 removes it.
func (p *Page) cookie(r *http.Request, name, value string, life time.Duration) *http.Cookie {
	c := &http.Cookie{
		Name: name, Value: value, Path: p.d.Prefix, HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: secureCookie(browserScheme(r), browserHost(r)),
	}
	if life < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(life / time.Second)
	}
	return c
}

// secureCookie reports whether a cookie set for a browser that reached
// host with scheme gets the Secure flag: always, except over plain HTTP
// to a loopback host (a hub on one's own machine), where browsers other
// than Chromium would drop a Secure cookie.
func secureCookie(scheme, host string) bool {
	return scheme != "http" || !loopback(host)
}

// loopback reports whether host (with or without a port) is localhost
// or a loopback address.
func loopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// browserScheme is the scheme the browser used, as JupyterHub's
// get_browser_protocol finds it: the outermost proxy's Forwarded proto,
// else X-Scheme or X-Forwarded-Proto, else the connection's own. These
// headers are trusted because they only decide what the browser sees;
// a browser cannot make a cross-site request carry them.
func browserScheme(r *http.Request) string {
	if p := forwarded(r, "proto"); p == "http" || p == "https" {
		return p
	}
	for _, h := range []string{"X-Scheme", "X-Forwarded-Proto"} {
		if p := strings.ToLower(first(r.Header.Get(h))); p == "http" || p == "https" {
			return p
		}
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// browserHost is the host the browser asked for: the outermost proxy's
// Forwarded host or X-Forwarded-Host, else the request's Host.
func browserHost(r *http.Request) string {
	if h := forwarded(r, "host"); h != "" {
		return h
	}
	if h := first(r.Header.Get("X-Forwarded-Host")); h != "" {
		return h
	}
	return r.Host
}

// browserOrigin is the origin the page has in the browser.
func browserOrigin(r *http.Request) string {
	return browserScheme(r) + "://" + strings.ToLower(browserHost(r))
}

// forwarded is the field key of the first (outermost) element of r's
// Forwarded header, lower-cased and unquoted.
func forwarded(r *http.Request, key string) string {
	for _, pair := range strings.Split(first(r.Header.Get("Forwarded")), ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(pair), "=")
		if strings.EqualFold(k, key) {
			return strings.ToLower(strings.Trim(v, `"`))
		}
	}
	return ""
}

// first is the first element of a comma-separated header value.
func first(v string) string {
	f, _, _ := strings.Cut(v, ",")
	return strings.TrimSpace(f)
}
