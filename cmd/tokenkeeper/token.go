package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/spawnerhook"
)

// runToken is `tokenkeeper token`: run inside a single-user server, it prints
// (or, with --file and --watch, keeps writing) a fresh access token for the
// server's user, or with --audience or --idp one derived from it. It never
// sees a refresh token.
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tokenkeeper token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", getenv("TOKENKEEPER_URL"), "tokenkeeper's `URL`, including the service prefix")
	minValid := fs.Duration("min-valid", time.Minute, "least `time` the token must have left")
	file := fs.String("file", "", "write the token to this `file` (mode 0600) instead of stdout")
	watch := fs.Bool("watch", false, "with --file: keep the file fresh until interrupted")
	audience := fs.String("audience", "", "the user's token exchanged for one whose audience is this `client`")
	idp := fs.String("idp", "", "the user's token at the external identity provider with this `alias`")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: tokenkeeper token [--audience A | --idp ALIAS] [--min-valid D] [--file F [--watch]] [--url U]\n\n"+
			"Inside a single-user server: print (or keep a file of) a fresh access token for the server's user,\n"+
			"or one derived from it, using JUPYTERHUB_API_TOKEN and TOKENKEEPER_URL.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return &config.UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return &config.UsageError{Err: fmt.Errorf("unexpected argument %q: tokenkeeper token takes only flags (see tokenkeeper token --help)", fs.Arg(0))}
	}
	token := getenv("JUPYTERHUB_API_TOKEN")
	var problems []error
	if *base == "" {
		problems = append(problems, errors.New("no service URL: set TOKENKEEPER_URL or pass --url"))
	}
	if token == "" {
		problems = append(problems, errors.New("no JupyterHub token: JUPYTERHUB_API_TOKEN is not set (run inside a single-user server)"))
	}
	if *watch && *file == "" {
		problems = append(problems, errors.New("--watch needs --file"))
	}
	if *audience != "" && *idp != "" {
		problems = append(problems, errors.New("--audience and --idp exclude each other"))
	}
	if err := errors.Join(problems...); err != nil {
		return err
	}
	c := spawnerhook.NewClient(*base, token, &http.Client{Timeout: 30 * time.Second})
	switch {
	case *audience != "":
		c = c.For(refresh.Target{Kind: refresh.KindAudience, Name: *audience})
	case *idp != "":
		c = c.For(refresh.Target{Kind: refresh.KindProvider, Name: *idp})
	}
	if *watch {
		logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
		return c.Watch(ctx, *file, *minValid, time.Now, logf)
	}
	tok, err := c.FreshToken(ctx, *minValid)
	if err != nil {
		return err
	}
	if *file != "" {
		return spawnerhook.WriteTokenFile(*file, tok.AccessToken)
	}
	_, err = fmt.Fprintln(stdout, tok.AccessToken)
	return err
}
