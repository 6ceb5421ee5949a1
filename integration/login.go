package integration

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// formAction finds the action of Keycloak's login form.
var formAction = regexp.MustCompile(`<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"|<form[^>]*action="([^"]+)"[^>]*id="kc-form-login"`)

// Login signs username in to the hub through the real OAuth code flow: the
// hub redirects to Keycloak, the login form is filled in, and Keycloak
// redirects back to the hub's callback. The returned client carries the
// hub's cookies.
func Login(ctx context.Context, hubURL, username, password string) (*http.Client, error) {
	return LoginVia(ctx, hubURL, "", username, password)
}

// LoginVia is Login through the identity provider alias that Keycloak
// brokers: it follows the provider's link on Keycloak's login page and fills
// in the provider's login form instead. With alias "" it is Login.
func LoginVia(ctx context.Context, hubURL, alias, username, password string) (*http.Client, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	page, at, err := getPage(ctx, c, hubURL+"/hub/oauth_login")
	if err != nil {
		return nil, fmt.Errorf("login %s: open login page: %w", username, err)
	}
	if alias != "" {
		if page, err = followProvider(ctx, c, page, at, alias); err != nil {
			return nil, fmt.Errorf("login %s through %s: %w", username, alias, err)
		}
	}
	action, err := loginFormAction(page)
	if err != nil {
		return nil, fmt.Errorf("login %s: %w", username, err)
	}
	form := url.Values{"username": {username}, "password": {password}, "credentialId": {""}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, action, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("login %s: submit form: %w", username, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("login %s: read %s: %w", username, resp.Request.URL, err)
	}
	if !strings.HasPrefix(resp.Request.URL.String(), hubURL+"/") {
		if msg := keycloakMessage(string(b)); msg != "" {
			return nil, fmt.Errorf("login %s: Keycloak says %q", username, msg)
		}
		return nil, fmt.Errorf("login %s: ended at %s with %d, want the hub", username, resp.Request.URL, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("login %s: the hub answered %d at %s", username, resp.StatusCode, resp.Request.URL)
	}
	return c, nil
}

// feedback finds the message Keycloak shows on a page it sends back instead
// of redirecting, such as "Invalid username or password."
var feedback = regexp.MustCompile(`(?:id="input-error(?:-[a-z]+)?"|class="[^"]*kc-feedback-text[^"]*")[^>]*>(?:\s*<[^>]+>)*\s*([^<]*[^<\s])`)

// loginFormAction returns the URL Keycloak's login form posts to.
func loginFormAction(page string) (string, error) {
	m := formAction.FindStringSubmatch(page)
	if m == nil {
		if msg := keycloakMessage(page); msg != "" {
			return "", fmt.Errorf("no Keycloak login form in the page; it says %q", msg)
		}
		return "", errors.New("no Keycloak login form in the page")
	}
	return html.UnescapeString(m[1] + m[2]), nil
}

// keycloakMessage returns the message on a Keycloak page, or "".
func keycloakMessage(page string) string {
	m := feedback.FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// providerLink finds the link to an identity provider on Keycloak's login
// page (id="social-ALIAS").
func providerLink(page, alias string) (string, bool) {
	re := regexp.MustCompile(`<a[^>]*id="social-` + regexp.QuoteMeta(alias) + `"[^>]*href="([^"]+)"|<a[^>]*href="([^"]+)"[^>]*id="social-` + regexp.QuoteMeta(alias) + `"`)
	m := re.FindStringSubmatch(page)
	if m == nil {
		return "", false
	}
	return html.UnescapeString(m[1] + m[2]), true
}

// followProvider follows the identity provider's link on Keycloak's login
// page at base and returns the provider's login page.
func followProvider(ctx context.Context, c *http.Client, page string, base *url.URL, alias string) (string, error) {
	link, ok := providerLink(page, alias)
	if !ok {
		return "", fmt.Errorf("no link to identity provider %q on Keycloak's login page", alias)
	}
	u, err := base.Parse(link)
	if err != nil {
		return "", fmt.Errorf("identity provider link %q: %w", link, err)
	}
	return get(ctx, c, u.String())
}

func get(ctx context.Context, c *http.Client, u string) (string, error) {
	page, _, err := getPage(ctx, c, u)
	return page, err
}

// getPage returns the page at u and the URL it was finally served from.
func getPage(ctx context.Context, c *http.Client, u string) (string, *url.URL, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("GET %s: %d", u, resp.StatusCode)
	}
	return string(b), resp.Request.URL, err
}
