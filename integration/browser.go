package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The service page's tests drive a real, headless Chromium (Debian's
// chromium package, which install.sh installs) through the DevTools
// protocol. The browser reaches 127.0.0.1 alone: every host name resolves
// to nothing, and any other address goes to a proxy that is not there.
// Each user browses in a browser context of their own (cookies apart), in
// one tab that records every HTML and JSON answer it receives, so a test
// can look for token-like strings in them.

// DefaultChromium is where Debian's chromium package puts the browser.
const DefaultChromium = "/usr/bin/chromium"

// ChromiumPath is the browser the tests run: $CHROMIUM, else DefaultChromium.
func ChromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return DefaultChromium
}

// Viewport is the size of every tab's window, in CSS pixels. Screenshots
// take the page's whole width and height, at most screenshotMaxWidth and
// screenshotMaxHeight, which keeps each PNG at a few hundred KB.
const (
	ViewportWidth       = 1200
	ViewportHeight      = 900
	screenshotMaxWidth  = 1600
	screenshotMaxHeight = 2400
)

// browserActionLimit bounds each browser action: a page load (redirects
// through the hub and Keycloak included), a click and what it loads, a
// screenshot. The suite's stacks share two cores.
const browserActionLimit = time.Minute

// Browser is a running headless Chromium.
type Browser struct {
	ctx         context.Context // the browser's first tab, which starts it
	cancel      func()
	cancelAlloc func()
}

// StartBrowser starts Chromium with an empty profile in userDataDir.
func StartBrowser(userDataDir string) (*Browser, error) {
	path := ChromiumPath()
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no Chromium at %s (integration/stack/install.sh installs Debian's chromium; CHROMIUM names another): %w", path, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(userDataDir),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(ViewportWidth, ViewportHeight),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		// Loopback only: no name resolves, and a connection to any address
		// but 127.0.0.1 goes to a proxy where nothing listens (Chromium
		// never sends loopback through a proxy).
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("proxy-server", "http://127.0.0.1:9"),
		chromedp.Flag("proxy-bypass-list", "127.0.0.1"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	return &Browser{ctx: ctx, cancel: cancel, cancelAlloc: cancelAlloc}, nil
}

// Close stops the browser.
func (b *Browser) Close() {
	b.cancel()
	b.cancelAlloc()
}

// Tab is one user's browser context, with cookies of its own, and its one
// tab, which records the answers it receives.
type Tab struct {
	// Name says whose tab it is, in errors.
	Name   string
	ctx    context.Context
	cancel func()
	rec    *recorder
}

// NewTab opens a tab in a new browser context.
func (b *Browser) NewTab(name string) (*Tab, error) {
	rec := newRecorder()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext(), chromedp.WithListener(rec.listen))
	tab := &Tab{Name: name, ctx: ctx, cancel: cancel, rec: rec}
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("%s's tab: %w", name, err)
	}
	// Bodies kept in the browser, outside the renderer, so that one read
	// just after its page was left is still there.
	buffer, perResource := int64(256<<20), int64(32<<20)
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{MaxTotalBufferSize: &buffer, MaxResourceBufferSize: &perResource}); err != nil {
		cancel()
		return nil, fmt.Errorf("%s's tab: network: %w", name, err)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(ViewportWidth, ViewportHeight)); err != nil {
		cancel()
		return nil, fmt.Errorf("%s's tab: viewport: %w", name, err)
	}
	go rec.readBodies(ctx)
	return tab, nil
}

// Close closes the tab and its browser context.
func (t *Tab) Close() { t.cancel() }

// run runs actions with the action limit, and then waits until the tab has
// no HTML or JSON request in flight and every recorded body is read.
func (t *Tab) run(what string, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(t.ctx, browserActionLimit)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		return fmt.Errorf("%s: %s: %w", t.Name, what, err)
	}
	return t.settle(ctx, what)
}

// navigation runs actions that load a page and returns the page's answer.
func (t *Tab) navigation(what string, actions ...chromedp.Action[chromedp.Void]) (*network.Response, error) {
	ctx, cancel := context.WithTimeout(t.ctx, browserActionLimit)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, actions...)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", t.Name, what, err)
	}
	if resp == nil {
		return nil, fmt.Errorf("%s: %s: no answer", t.Name, what)
	}
	return resp, t.settle(ctx, what)
}

func (t *Tab) settle(ctx context.Context, what string) error {
	if err := t.rec.settle(ctx); err != nil {
		return fmt.Errorf("%s: %s: %w", t.Name, what, err)
	}
	return nil
}

// Navigate loads u and returns the HTTP status of the page it ends on.
func (t *Tab) Navigate(u string) (int, error) {
	resp, err := t.navigation("open "+u, chromedp.Navigate(u))
	if err != nil {
		return 0, err
	}
	return int(resp.Status), nil
}

// ClickToLoad clicks the element sel (CSS) finds, which loads a page (a
// link, a form's submit button), waits for it and returns its HTTP status.
func (t *Tab) ClickToLoad(sel string) (int, error) {
	resp, err := t.navigation("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		return 0, err
	}
	return int(resp.Status), nil
}

// Click clicks the element sel (CSS) finds, once it is visible, where the
// click loads no page (a menu's toggle).
func (t *Tab) Click(sel string) error {
	return t.run("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// Type types text into the field sel (CSS) finds.
func (t *Tab) Type(sel, text string) error {
	return t.run("type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible))
}

// evaluate runs a JavaScript expression in the page and decodes its JSON value.
func evaluate[T any](t *Tab, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(t.ctx, browserActionLimit)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		var zero T
		return zero, fmt.Errorf("%s: evaluate %s: %w", t.Name, expr, err)
	}
	return v, nil
}

// js quotes s as a JavaScript string.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Exists reports whether sel (CSS) finds an element now; it does not wait.
func (t *Tab) Exists(sel string) (bool, error) {
	return evaluate[bool](t, "document.querySelector("+js(sel)+") !== null")
}

// Count is how many elements sel (CSS) finds now.
func (t *Tab) Count(sel string) (int, error) {
	return evaluate[int](t, "document.querySelectorAll("+js(sel)+").length")
}

// Attr reads attribute name of the first element sel (CSS) finds; ok is
// false when there is no such element or it has no such attribute.
func (t *Tab) Attr(sel, name string) (value string, ok bool, err error) {
	type attr struct {
		Found bool   `json:"found"`
		Value string `json:"value"`
	}
	v, err := evaluate[attr](t, "(() => { const e = document.querySelector("+js(sel)+"); const v = e && e.getAttribute("+js(name)+
		"); return {found: v !== null && v !== undefined, value: v || ''}; })()")
	return v.Value, v.Found, err
}

// Text is the rendered text of the first element sel (CSS) finds, "" if none.
func (t *Tab) Text(sel string) (string, error) {
	return evaluate[string](t, "(() => { const e = document.querySelector("+js(sel)+"); return e ? e.innerText : ''; })()")
}

// HTML is the page's document as it stands now.
func (t *Tab) HTML() (string, error) {
	return evaluate[string](t, "document.documentElement.outerHTML")
}

// Location is the page's URL.
func (t *Tab) Location() (string, error) {
	return evaluate[string](t, "location.href")
}

// WaitFor polls, every 100 ms for up to limit, until sel (CSS) finds an
// element; the page does not change by itself, so a page that lacks it is
// usually the wrong page, which the error names.
func (t *Tab) WaitFor(sel string, limit time.Duration) error {
	err := Poll(context.Background(), limit, 100*time.Millisecond, func() (bool, error) { return t.Exists(sel) })
	if err != nil {
		loc, _ := t.Location()
		return fmt.Errorf("%s: no %s on %s: %w", t.Name, sel, loc, err)
	}
	return nil
}

// Screenshot writes the page as a PNG to path: the whole page, at least
// the viewport and at most screenshotMaxWidth by screenshotMaxHeight. It
// returns the file's size.
func (t *Tab) Screenshot(path string) (int, error) {
	ctx, cancel := context.WithTimeout(t.ctx, browserActionLimit)
	defer cancel()
	png, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) ([]byte, error) {
		m, err := cdp.Call(ctx, tg, page.GetLayoutMetrics, cdp.Empty{})
		if err != nil {
			return nil, err
		}
		width, height := float64(ViewportWidth), float64(ViewportHeight)
		if m.CSSContentSize != nil {
			width = min(max(m.CSSContentSize.Width, width), screenshotMaxWidth)
			height = min(max(m.CSSContentSize.Height, height), screenshotMaxHeight)
		}
		beyond := true
		r, err := cdp.Call(ctx, tg, page.CaptureScreenshot, page.CaptureScreenshotParams{
			Format:                page.CaptureScreenshotFormatPng,
			Clip:                  &page.Viewport{Width: width, Height: height, Scale: 1},
			CaptureBeyondViewport: &beyond,
		})
		return r.Data, err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: screenshot: %w", t.Name, err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return 0, fmt.Errorf("%s: screenshot: %w", t.Name, err)
	}
	return len(png), nil
}

// LoginThroughHub signs user in to the hub at hubBaseURL (HubBaseURL) as a
// person does: the hub's oauth_login sends the browser to Keycloak, whose
// login form is filled in and submitted, and Keycloak sends it back to the
// hub. It fails with Keycloak's message when Keycloak refuses.
func (t *Tab) LoginThroughHub(hubBaseURL, user, password string) error {
	if _, err := t.Navigate(hubBaseURL + "/hub/oauth_login"); err != nil {
		return err
	}
	if loc, err := t.Location(); err != nil || strings.HasPrefix(loc, hubBaseURL+"/hub/") {
		return err // Keycloak's session in this browser context: no form
	}
	if err := t.WaitFor("#kc-form-login", 10*time.Second); err != nil {
		return err
	}
	for _, step := range []error{t.Type("#username", user), t.Type("#password", password)} {
		if step != nil {
			return step
		}
	}
	status, err := t.ClickToLoad(`#kc-form-login [type="submit"]`)
	if err != nil {
		return err
	}
	loc, err := t.Location()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(loc, hubBaseURL+"/hub/") {
		msg, _ := t.Text(`[id^="input-error"], .kc-feedback-text, #kc-error-message`)
		return fmt.Errorf("%s: login ended at %s with %d, want the hub; the page says %q", t.Name, loc, status, strings.TrimSpace(msg))
	}
	if status != 200 {
		return fmt.Errorf("%s: login: the hub answered %d at %s", t.Name, status, loc)
	}
	return nil
}

// Settle waits until the tab has no HTML or JSON request in flight and
// every recorded body is read.
func (t *Tab) Settle() error {
	ctx, cancel := context.WithTimeout(t.ctx, browserActionLimit)
	defer cancel()
	return t.settle(ctx, "settle")
}

// Responses are the answers the tab received so far, in order: every
// document, XHR and fetch answer, with the body of those in HTML or JSON,
// and the redirects on the way.
func (t *Tab) Responses() []Response { return t.rec.snapshot() }

// Requests are the URLs of every request the tab sent, of every kind, in order.
func (t *Tab) Requests() []string {
	t.rec.mu.Lock()
	defer t.rec.mu.Unlock()
	return slices.Clone(t.rec.requests)
}

// Response is one answer a tab received.
type Response struct {
	URL    string
	Type   network.ResourceType
	Status int
	MIME   string
	// Redirect is an answer that sent the browser on (no body is kept).
	Redirect bool
	// Body is the body of an HTML or JSON answer.
	Body []byte
	// Err says why an HTML or JSON answer's body could not be read, or
	// that it is not read yet.
	Err string
}

// errUnread is a Response's Err until its body is read.
const errUnread = "body not read yet"

// recorded reports whether a body of this MIME type is kept.
func recorded(mime string) bool {
	return mime == "text/html" || mime == "application/json" || strings.HasSuffix(mime, "+json")
}

// watched reports whether answers of this type are recorded.
func watched(typ network.ResourceType) bool {
	return typ == network.ResourceTypeDocument || typ == network.ResourceTypeXHR || typ == network.ResourceTypeFetch
}

// recorder keeps a tab's answers. Its listener runs in the tab's event
// loop, so it only notes events; readBodies asks the browser for bodies.
type recorder struct {
	mu        sync.Mutex
	requests  []string
	responses []*Response
	inFlight  map[network.RequestID]string    // watched requests not yet finished, to their URLs
	awaiting  map[network.RequestID]*Response // answers whose body has not arrived yet
	queue     []bodyRead                      // bodies arrived and not read yet
	reading   int                             // bodies being read
	wake      chan struct{}
}

type bodyRead struct {
	id network.RequestID
	r  *Response
}

func newRecorder() *recorder {
	return &recorder{
		inFlight: map[network.RequestID]string{}, awaiting: map[network.RequestID]*Response{},
		wake: make(chan struct{}, 1),
	}
}

func (rec *recorder) listen(ev any) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		rec.requests = append(rec.requests, ev.Request.URL)
		if r := ev.RedirectResponse; r != nil && watched(ev.Type) {
			rec.responses = append(rec.responses, &Response{URL: r.URL, Type: ev.Type, Status: int(r.Status), MIME: r.MimeType, Redirect: true})
		}
		if watched(ev.Type) {
			rec.inFlight[ev.RequestID] = ev.Request.URL
		}
	case *network.EventResponseReceived:
		if !watched(ev.Type) {
			return
		}
		r := &Response{URL: ev.Response.URL, Type: ev.Type, Status: int(ev.Response.Status), MIME: ev.Response.MimeType}
		rec.responses = append(rec.responses, r)
		if recorded(r.MIME) {
			r.Err = errUnread
			rec.awaiting[ev.RequestID] = r
		}
	case *network.EventLoadingFinished:
		delete(rec.inFlight, ev.RequestID)
		if r, ok := rec.awaiting[ev.RequestID]; ok {
			delete(rec.awaiting, ev.RequestID)
			rec.queue = append(rec.queue, bodyRead{ev.RequestID, r})
			select {
			case rec.wake <- struct{}{}:
			default:
			}
		}
	case *network.EventLoadingFailed:
		delete(rec.inFlight, ev.RequestID)
		if r, ok := rec.awaiting[ev.RequestID]; ok {
			delete(rec.awaiting, ev.RequestID)
			r.Err = "loading failed: " + ev.ErrorText
		}
	}
}

// readBodies reads the bodies of the answers that arrived, until ctx ends.
func (rec *recorder) readBodies(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-rec.wake:
		}
		for {
			rec.mu.Lock()
			if len(rec.queue) == 0 {
				rec.mu.Unlock()
				break
			}
			next := rec.queue[0]
			rec.queue = rec.queue[1:]
			rec.reading++
			rec.mu.Unlock()
			res, err := chromedp.Call(ctx, network.GetResponseBody, network.GetResponseBodyParams{RequestID: next.id})
			rec.mu.Lock()
			if err != nil {
				next.r.Err = "read body: " + err.Error()
			} else {
				next.r.Body, next.r.Err = res.Body, ""
			}
			rec.reading--
			rec.mu.Unlock()
		}
	}
}

// settle polls until no watched request is in flight and every body that
// arrived is read.
func (rec *recorder) settle(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		rec.mu.Lock()
		busy := len(rec.inFlight) + len(rec.queue) + rec.reading
		var pending []string
		for _, u := range rec.inFlight {
			pending = append(pending, u)
		}
		rec.mu.Unlock()
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("requests still in flight %v, or bodies unread: %w", pending, ctx.Err())
		case <-tick.C:
		}
	}
}

func (rec *recorder) snapshot() []Response {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := make([]Response, len(rec.responses))
	for i, r := range rec.responses {
		out[i] = *r
	}
	return out
}

// jwtLike matches what starts a JSON Web Token: a base64url-encoded JSON
// object ({" is eyJ) and the dot that ends its header.
var jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.`)

// TokenLike lists the answers whose bodies hold a string that looks like a
// JSON Web Token, and the HTML and JSON answers whose bodies could not be
// read (which could hold one). Each entry names the answer and where the
// match is, never the match itself.
func TokenLike(responses []Response) []string {
	var out []string
	for _, r := range responses {
		if r.Redirect || !recorded(r.MIME) {
			continue
		}
		if r.Err != "" {
			out = append(out, fmt.Sprintf("%s %d %s (%s): body not read: %s", r.Type, r.Status, r.URL, r.MIME, r.Err))
			continue
		}
		if locs := jwtLike.FindAllIndex(r.Body, -1); len(locs) > 0 {
			at := make([]int, len(locs))
			for i, l := range locs {
				at[i] = l[0]
			}
			out = append(out, fmt.Sprintf("%s %d %s (%s): %d token-like strings at bytes %v of %d", r.Type, r.Status, r.URL, r.MIME, len(locs), at, len(r.Body)))
		}
	}
	return out
}

// NotLoopback lists the URLs among urls that leave 127.0.0.1 (data:,
// about: and the like stay in the browser).
func NotLoopback(urls []string) []string {
	var out []string
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			out = append(out, s)
			continue
		}
		if (u.Scheme == "http" || u.Scheme == "https" || u.Scheme == "ws" || u.Scheme == "wss") && u.Hostname() != "127.0.0.1" {
			out = append(out, s)
		}
	}
	return out
}
