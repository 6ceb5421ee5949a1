"""``tokenkeeper-token`` (or ``python -m tokenkeeper``): print a fresh access token.

Run inside a single-user server. Prints the server's user's access token
(with ``--audience A`` one exchanged for client A, with ``--idp ALIAS`` the
identity provider's own), or with ``--file`` writes it to a file of mode
0600. Exit status 0 on success, 1 on any failure with the reason on standard
error; a token with less time left than asked for is printed, with a warning
on standard error saying why.
"""

import argparse
import re
import sys
import warnings

from . import ShortTokenWarning, TokenkeeperError, get_token
from .tokenfiles import write_atomically

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def seconds(text):
    """Parse a duration: whole seconds, optionally with s, m or h (``90``, ``90s``, ``5m``)."""
    m = re.fullmatch(r"(\d+)([smh]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: want whole seconds, or a number with s, m or h")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _name(text):
    """Check an audience or identity-provider alias: not empty."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="tokenkeeper-token",
        description="Print a fresh Keycloak access token for this JupyterHub server's user.",
    )
    parser.add_argument("--min-valid", type=seconds, default=60, metavar="TIME",
                        help="least time the token must have left (default 60s)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--audience", type=_name, metavar="A",
                       help="the user's token exchanged for one whose audience is the Keycloak client A")
    which.add_argument("--idp", type=_name, metavar="ALIAS",
                       help="the access token of the identity provider ALIAS the user logged in through")
    parser.add_argument("--url", help="tokenkeeper's URL with the service prefix (default $TOKENKEEPER_URL)")
    parser.add_argument("--file", help="write the token to this file (mode 0600) instead of standard output")
    args = parser.parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ShortTokenWarning)
        try:
            token = get_token(min_valid=args.min_valid, url=args.url, audience=args.audience, idp=args.idp)
        except TokenkeeperError as e:
            print(f"tokenkeeper-token: {e}", file=sys.stderr)
            return 1
    for w in caught:
        print(f"tokenkeeper-token: warning: {w.message}", file=sys.stderr)
    if args.file:
        try:
            write_atomically(args.file, token + "\n")
        except OSError as e:
            print(f"tokenkeeper-token: {args.file}: {e.strerror or e}", file=sys.stderr)
            return 1
    else:
        print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
