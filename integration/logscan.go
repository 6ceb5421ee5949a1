package integration

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// expectedInLogs are the exceptions and tracebacks the suite provokes on
// purpose or cannot avoid, each with the reason. Any other one in Keycloak's
// or the hub's log fails the run.
var expectedInLogs = []struct {
	pattern *regexp.Regexp
	reason  string
}{
	{
		regexp.MustCompile(`KC-SERVICES0057: Logout for client '[\w-]+' failed: .*(Connection refused|Connection reset|Read timed out)`),
		"Keycloak could not deliver a back-channel logout: tests that turn back-channel logout off point the " +
			"client's back-channel URL at a closed loopback port, and tests that kill tokenkeeper leave nobody listening for a moment",
	},
	{
		regexp.MustCompile(`^Caused by: java\.net\.(ConnectException|SocketException|SocketTimeoutException): (Connection refused|Connection reset|Read timed out)`),
		"the cause of the undelivered back-channel logouts above",
	},
	{
		regexp.MustCompile(`^AttributeError: '\w+Handler' object has no attribute '_token_authenticated'$`),
		"JupyterHub's refresh_auth, when refresh_user_hook refuses the browser session of a user tokenkeeper " +
			"logged out, reads an attribute that the handler sets only later; the browser is still sent to the " +
			"login page, which the logout tests assert",
	},
}

// shutdownCallback is the line before a traceback of one of JupyterHub's
// periodic callbacks. While the hub shuts down they may still run after the
// services and the proxy they check have stopped (JupyterHub 5 logs
// AttributeError and ConnectionRefusedError then); those tracebacks are
// the hub's own shutdown race and are not reported. Outside a shutdown
// they are.
var shutdownCallback = regexp.MustCompile(`Exception in callback <bound method JupyterHub\.(check_services_health|update_last_activity) `)

// hubStopping and hubRunning bound a hub's shutdown in its log.
var (
	hubStopping = regexp.MustCompile(`JupyterHub app:\d+\] Received signal SIG(TERM|INT), initiating shutdown`)
	hubRunning  = regexp.MustCompile(`JupyterHub is now running at`)
)

// frame is a line of a Java stack trace.
var frame = regexp.MustCompile(`^\s+at [\w$.<>/]+\(`)

// exceptionsIn returns the first line of every Python traceback's exception
// and every Java stack trace in the log at path.
func exceptionsIn(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	var prev string
	traceback, inJava := -1, false // traceback: the indent of an open Python traceback
	stopping, skip := false, false // skip: the open traceback is a shutdown race
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		indent := len(line) - len(strings.TrimLeft(line, " \t"))
		switch {
		case hubStopping.MatchString(line):
			stopping = true
		case hubRunning.MatchString(line):
			stopping = false
		case strings.HasSuffix(line, "Traceback (most recent call last):"):
			traceback = indent
			skip = stopping && shutdownCallback.MatchString(prev)
		case traceback >= 0 && indent <= traceback && strings.TrimSpace(line) != "":
			if !skip {
				out = append(out, strings.TrimSpace(line))
			}
			traceback = -1
		case frame.MatchString(line):
			if !inJava {
				out = append(out, strings.TrimSpace(prev))
			}
			inJava = true
		case !strings.HasPrefix(strings.TrimSpace(line), "..."):
			inJava = false
		}
		prev = line
	}
	return out, sc.Err()
}

// UnexpectedExceptions lists the exceptions in the stack's logs that
// expectedInLogs does not name.
func UnexpectedExceptions(s *Stack) error {
	var bad []string
	for _, path := range []string{s.KeycloakLog(), s.HubLog()} {
		found, err := exceptionsIn(path)
		if err != nil {
			return err
		}
		for _, e := range found {
			if !expected(e) {
				bad = append(bad, path+": "+e)
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d exceptions no test expected (add them to expectedInLogs with the reason, or fix them):\n  %s",
			len(bad), strings.Join(bad, "\n  "))
	}
	return nil
}

func expected(line string) bool {
	for _, e := range expectedInLogs {
		if e.pattern.MatchString(line) {
			return true
		}
	}
	return false
}
