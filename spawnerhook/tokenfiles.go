package spawnerhook

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// TokenFile is one file a server's token-file keeper reports it keeps: its
// name, mode and age, never its contents.
type TokenFile struct {
	Server   string
	Name     string
	Mode     string
	Modified time.Time
}

// Report limits: a server keeps a handful of token files.
const (
	maxReportedFiles = 32
	maxFileName      = 255
)

// TokenFiles remembers, in memory, the token files each user's servers
// report. A restart forgets them until the keepers report again (after
// their next write, or when their wait for a logout returns).
type TokenFiles struct {
	mu    sync.Mutex
	files map[string]map[string][]TokenFile // by user, then server
}

// NewTokenFiles returns an empty record of reported token files.
func NewTokenFiles() *TokenFiles {
	return &TokenFiles{files: make(map[string]map[string][]TokenFile)}
}

// report replaces what user's server keeps.
func (t *TokenFiles) report(user, server string, files []TokenFile) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.files[user] == nil {
		t.files[user] = make(map[string][]TokenFile)
	}
	if len(files) == 0 {
		delete(t.files[user], server)
		return
	}
	t.files[user][server] = files
}

// Of returns the files user's servers reported, by server and name.
func (t *TokenFiles) Of(user string) []TokenFile {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []TokenFile
	for _, files := range t.files[user] {
		out = append(out, files...)
	}
	slices.SortFunc(out, func(a, b TokenFile) int {
		return strings.Compare(a.Server+"\x00"+a.Name, b.Server+"\x00"+b.Name)
	})
	return out
}

// reportBody is what a keeper PUTs to token-files.
type reportBody struct {
	Server string `json:"server"`
	Files  []struct {
		Name     string    `json:"name"`
		Mode     string    `json:"mode"`
		Modified time.Time `json:"modified"`
	} `json:"files"`
}

// fileMode is a permission mode in octal, as the keeper reports it.
var fileMode = regexp.MustCompile(`^0?[0-7]{3}$`)

// parseReport checks a keeper's report: a server name, and at most
// maxReportedFiles files, each a plain name (no directory) with an octal mode.
func parseReport(body []byte) (string, []TokenFile, error) {
	var r reportBody
	if err := json.Unmarshal(body, &r); err != nil {
		return "", nil, badRequest("The body must be JSON: {\"server\": NAME, \"files\": [{\"name\", \"mode\", \"modified\"}]}.")
	}
	if len(r.Files) > maxReportedFiles || len(r.Server) > maxFileName {
		return "", nil, badRequest("At most " + strconv.Itoa(maxReportedFiles) + " files, with names up to 255 bytes.")
	}
	files := make([]TokenFile, 0, len(r.Files))
	for _, f := range r.Files {
		if f.Name == "" || len(f.Name) > maxFileName || strings.ContainsAny(f.Name, "/\x00") || !fileMode.MatchString(f.Mode) {
			return "", nil, badRequest("Each file needs a name without '/' and an octal mode such as \"0600\".")
		}
		files = append(files, TokenFile{Server: r.Server, Name: f.Name, Mode: f.Mode, Modified: f.Modified})
	}
	return r.Server, files, nil
}

// reportTokenFiles records the token files the caller's server keeps. The
// caller is a user's token (the server's): files are recorded for that user.
func (h *handler) reportTokenFiles(c *gin.Context) {
	id := caller(c)
	if id.Kind != "user" {
		h.writeError(c, forbidden("Only a user's server reports its token files."))
		return
	}
	body, err := readBody(c)
	if err != nil {
		h.writeError(c, err)
		return
	}
	server, files, err := parseReport(body)
	if err != nil {
		h.writeError(c, err)
		return
	}
	h.TokenFiles.report(id.Name, server, files)
	c.Status(http.StatusNoContent)
}

// readBody reads the bounded request body.
func readBody(c *gin.Context) ([]byte, error) {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, err
		}
		return nil, badRequest("The request body could not be read.")
	}
	return body, nil
}

// maxLogoutWait bounds how long session-end holds a request open.
const maxLogoutWait = 300 * time.Second

// sessionEnd answers when the caller's user is logged out after ?since=,
// or after ?wait= seconds (at most 300) with ended false. The servers'
// token-file keepers wait on it, so that a logout removes their files at
// once. The request ends early when tokenkeeper stops.
func (h *handler) sessionEnd(c *gin.Context) {
	id := caller(c)
	if id.Kind != "user" {
		h.writeError(c, forbidden("Only a user's own token waits for their logout."))
		return
	}
	wait, since, err := parseSessionEnd(c, h.Now())
	if err != nil {
		h.writeError(c, err)
		return
	}
	// The server's write timeout is shorter than the wait.
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(wait + 10*time.Second))
	ctx, cancel := context.WithCancel(c.Request.Context())
	defer cancel()
	if h.Shutdown != nil {
		defer context.AfterFunc(h.Shutdown, cancel)()
	}
	ended, next := h.WaitLogout(ctx, id.Name, since, wait)
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"ended": ended, "since": next.UTC().Format(time.RFC3339Nano)})
}

// parseSessionEnd reads ?wait= (seconds, 0 to 300, default 300) and
// ?since= (RFC 3339, default now).
func parseSessionEnd(c *gin.Context, now time.Time) (time.Duration, time.Time, error) {
	wait := maxLogoutWait
	if s := c.Query("wait"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || time.Duration(n)*time.Second > maxLogoutWait {
			return 0, time.Time{}, badRequest("wait must be a whole number of seconds from 0 to 300.")
		}
		wait = time.Duration(n) * time.Second
	}
	since := now
	if s := c.Query("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, time.Time{}, badRequest("since must be a time as session-end answered it (RFC 3339).")
		}
		since = t
	}
	return wait, since, nil
}
