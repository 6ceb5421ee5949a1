"""Fresh Keycloak access tokens inside a JupyterHub single-user server.

Standard library only::

    from tokenkeeper import get_token
    headers = {"Authorization": f"Bearer {get_token()}"}

The server's own JupyterHub token (``JUPYTERHUB_API_TOKEN``) authenticates the
call; tokenkeeper's URL comes from ``TOKENKEEPER_URL``, which the hub's
pre-spawn hook sets. Only access tokens are ever returned, never refresh
tokens.
"""

import base64
import binascii
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

__version__ = "0.1.0"

__all__ = ["get_token", "LoginRequired", "ShortTokenWarning", "TokenkeeperError", "TokenkeeperUnreachable"]

# RETRY_FOR is how long, in seconds, a call keeps retrying while tokenkeeper
# refuses or resets connections: after a crash the hub restarts its managed
# service only at its next poll.
RETRY_FOR = 45


class TokenkeeperError(RuntimeError):
    """tokenkeeper could not provide a token."""


class LoginRequired(TokenkeeperError):
    """The user's Keycloak session has ended: log in to JupyterHub again."""


class TokenkeeperUnreachable(TokenkeeperError):
    """tokenkeeper refused or reset every connection for the whole retry time."""


class ShortTokenWarning(UserWarning):
    """The token has fewer seconds left than asked for; the message says why."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect: following one would send the server's token elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def get_token(min_valid=60, url=None, hub_token=None, timeout=30, *, retry_for=RETRY_FOR,
              sleep=time.sleep, clock=time.monotonic):
    """Return an access token with at least ``min_valid`` seconds left.

    When the token has less (the realm's tokens are shorter, or Keycloak
    could not be reached), a :class:`ShortTokenWarning` says why. Raises
    :class:`LoginRequired` when the user's Keycloak session has ended,
    :class:`TokenkeeperUnreachable` when tokenkeeper refused or reset
    connections for ``retry_for`` seconds, and :class:`TokenkeeperError`
    otherwise.
    """
    answer = fresh_token(min_valid, url, hub_token, timeout, retry_for=retry_for, sleep=sleep, clock=clock)
    shortfall = short_token_message(answer, min_valid)
    if shortfall:
        warnings.warn(shortfall, ShortTokenWarning, stacklevel=2)
    return answer["access_token"]


def fresh_token(min_valid=60, url=None, hub_token=None, timeout=30, *, retry_for=RETRY_FOR,
                sleep=time.sleep, clock=time.monotonic):
    """Return tokenkeeper's whole answer: ``access_token``, ``expires_in``, ``expires_at``, ``user``."""
    base = (url or os.environ.get("TOKENKEEPER_URL") or "").rstrip("/")
    token = hub_token or os.environ.get("JUPYTERHUB_API_TOKEN")
    if not base or not token:
        raise TokenkeeperError("TOKENKEEPER_URL and JUPYTERHUB_API_TOKEN must be set (run inside a JupyterHub server)")
    query = urllib.parse.urlencode({"min_valid": int(min_valid)})
    req = urllib.request.Request(f"{base}/fresh-token?{query}", headers={"Authorization": f"token {token}"})
    deadline = clock() + retry_for
    delay = 0.5
    while True:
        try:
            return _ask(req, timeout)
        except _Transient as e:
            if clock() + delay > deadline:
                raise TokenkeeperUnreachable(
                    f"tokenkeeper at {base} refused or dropped every connection for {retry_for} s "
                    f"(last: {e.__cause__}); it may be restarting or not running"
                ) from None
            sleep(delay)
            delay = min(delay * 2, 5)


class _Transient(Exception):
    """A refused or reset connection, worth trying again."""


def _ask(req, timeout):
    """Make one request; return the answer, or raise TokenkeeperError or _Transient."""
    try:
        with _opener.open(req, timeout=timeout) as resp:
            answer = json.load(resp)
    except urllib.error.HTTPError as e:
        raise _http_error(e) from None
    except (ConnectionRefusedError, ConnectionResetError) as e:
        raise _Transient() from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, (ConnectionRefusedError, ConnectionResetError)):
            raise _Transient() from e.reason
        raise TokenkeeperError(f"tokenkeeper at {_where(req)}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        # Timeouts and broken answers: tokenkeeper is up but not answering well.
        raise TokenkeeperError(f"tokenkeeper at {_where(req)}: {e!r}") from None
    except ValueError:
        raise TokenkeeperError("tokenkeeper's answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
        raise TokenkeeperError("tokenkeeper's answer carries no access token")
    return answer


def _where(req):
    return req.full_url.split("?")[0]


def _http_error(e):
    """Return the error for tokenkeeper's error answer ``e``."""
    if 300 <= e.code < 400:
        return TokenkeeperError(
            f"tokenkeeper answered HTTP {e.code} redirecting to {e.headers.get('Location', '?')}; "
            "not followed, since it would carry the server's token there: check TOKENKEEPER_URL"
        )
    message = _message(e)
    if e.code == 409:
        return LoginRequired(message)
    return TokenkeeperError(f"HTTP {e.code}: {message}")


def _message(e):
    try:
        return json.load(e)["message"]
    except Exception:
        return e.reason


def short_token_message(answer, min_valid):
    """Return why the token in ``answer`` has fewer than ``min_valid`` seconds left, or None.

    tokenkeeper never asks more of a token than half its lifetime, so when
    ``min_valid`` is more than half the realm's access-token lifetime it is
    not met; the message then names the lifetime. Otherwise tokenkeeper
    returned the current token because Keycloak could not issue a new one.
    """
    left = answer.get("expires_in")
    if not isinstance(left, (int, float)) or isinstance(left, bool) or left >= min_valid:
        return None
    exp, iat = _claim(answer["access_token"], "exp"), _claim(answer["access_token"], "iat")
    if exp is not None and iat is not None and exp - iat < 2 * min_valid:
        return (f"the token has {left:.0f} s left, less than the {min_valid} s asked for: the realm's "
                f"access tokens live {exp - iat:.0f} s, and tokenkeeper never asks more of a token than "
                f"half its lifetime; ask for at most {(exp - iat) // 2:.0f} s")
    return (f"the token has {left:.0f} s left, less than the {min_valid} s asked for: tokenkeeper could "
            f"not refresh it (is Keycloak reachable?) and returned the current one")


def _claim(jwt, name):
    """Return a positive numeric claim of a JWT's payload (unverified), or None."""
    if not isinstance(jwt, str) or jwt.count(".") != 2:
        return None
    payload = jwt.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    value = claims.get(name) if isinstance(claims, dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return value if ok else None
