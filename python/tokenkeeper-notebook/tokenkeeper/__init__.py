"""Fresh Keycloak access tokens inside a JupyterHub single-user server.

Standard library only::

    from tokenkeeper import get_token
    headers = {"Authorization": f"Bearer {get_token()}"}
    trino = get_token(audience="trino")   # exchanged for a token for client trino
    github = get_token(idp="github")      # the identity provider's own token

The server's own JupyterHub token (``JUPYTERHUB_API_TOKEN``) authenticates the
call; tokenkeeper's URL comes from ``TOKENKEEPER_URL``, which the hub's
pre-spawn hook sets. Only access tokens are ever returned, never refresh
tokens. Token files that stay fresh without any code are kept by
:mod:`tokenkeeper.tokenfiles`, which the package's Jupyter server extension
starts.
"""

import base64
import binascii
import datetime
import email.utils
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

__version__ = "0.1.0"

__all__ = [
    "get_token", "fresh_token", "ExchangeRefused", "LoginRequired", "NotAllowed", "ShortTokenWarning",
    "TokenkeeperError", "TokenkeeperUnreachable",
]

# RETRY_FOR is how long, in seconds, a call keeps retrying while tokenkeeper
# refuses or resets connections: after a crash the hub restarts its managed
# service only at its next poll.
RETRY_FOR = 45


class TokenkeeperError(RuntimeError):
    """tokenkeeper could not provide a token.

    ``status`` is tokenkeeper's HTTP status and ``code`` the ``error`` of its
    JSON answer, when it answered with an error (else both are None).
    ``retry_after`` is how many seconds its ``Retry-After`` asked the caller
    to wait before asking again, when the answer had one (else None).
    """

    def __init__(self, message, status=None, code=None, retry_after=None):
        super().__init__(message)
        self.status, self.code, self.retry_after = status, code, retry_after


class LoginRequired(TokenkeeperError):
    """The user's Keycloak session has ended: log in to JupyterHub again.

    Raised when tokenkeeper says so (HTTP 409), and when the hub refuses
    the server's own token (401), as JupyterHub 5 does once the user must
    log in again.
    """


class NotAllowed(TokenkeeperError):
    """tokenkeeper hands out no token for this audience or identity provider.

    The admin lists the audiences and identity providers tokenkeeper serves
    in its ``audiences`` and ``identity_providers`` settings.
    """


class ExchangeRefused(TokenkeeperError):
    """Keycloak refused to make the token asked for; the message carries its reason."""


class TokenkeeperUnreachable(TokenkeeperError):
    """tokenkeeper refused or reset every connection for the whole retry time."""


class ShortTokenWarning(UserWarning):
    """The token has fewer seconds left than asked for; the message says why."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect: following one would send the server's token elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def get_token(min_valid=60, url=None, hub_token=None, timeout=30, *, audience=None, idp=None,
              retry_for=RETRY_FOR, sleep=time.sleep, clock=time.monotonic):
    """Return an access token with at least ``min_valid`` seconds left.

    By default the token is the user's own Keycloak access token. With
    ``audience`` it is that token exchanged for one whose audience is the
    Keycloak client ``audience`` alone; with ``idp`` it is the access token
    of the external identity provider (its Keycloak alias) the user logged
    in through. Ask for one of them at most.

    When the token has less time left than asked for (the realm's tokens
    are shorter, or Keycloak could not be reached), a
    :class:`ShortTokenWarning` says why. Raises :class:`LoginRequired` when
    the user's Keycloak session has ended (or the hub refuses the server's
    token), :class:`NotAllowed` when
    tokenkeeper serves no token for that audience or identity provider,
    :class:`ExchangeRefused` when Keycloak refused to make it,
    :class:`TokenkeeperUnreachable` when tokenkeeper refused or reset
    connections for ``retry_for`` seconds, and :class:`TokenkeeperError`
    otherwise.
    """
    answer = fresh_token(min_valid, url, hub_token, timeout, audience=audience, idp=idp,
                         retry_for=retry_for, sleep=sleep, clock=clock)
    shortfall = short_token_message(answer, min_valid)
    if shortfall:
        warnings.warn(shortfall, ShortTokenWarning, stacklevel=2)
    return answer["access_token"]


def fresh_token(min_valid=60, url=None, hub_token=None, timeout=30, *, audience=None, idp=None,
                retry_for=RETRY_FOR, sleep=time.sleep, clock=time.monotonic):
    """Return tokenkeeper's whole answer: ``access_token``, ``token_type``, ``expires_in``, ``expires_at``, ``user``.

    With ``audience`` or ``idp`` (see :func:`get_token`) the answer also
    names it, and an answer that does not is refused: tokenkeeper versions
    that do not serve such tokens ignore the parameter and would hand out
    the user's own token in its place.
    """
    base = (url or os.environ.get("TOKENKEEPER_URL") or "").rstrip("/")
    token = hub_token or os.environ.get("JUPYTERHUB_API_TOKEN")
    if not base or not token:
        raise TokenkeeperError("TOKENKEEPER_URL and JUPYTERHUB_API_TOKEN must be set (run inside a JupyterHub server)")
    target = _target(audience, idp)
    query = urllib.parse.urlencode({"min_valid": int(min_valid), **target})
    req = urllib.request.Request(f"{base}/fresh-token?{query}", headers={"Authorization": f"token {token}"})
    deadline = clock() + retry_for
    delay = 0.5
    while True:
        try:
            return _confirmed(_ask(req, timeout, target), target)
        except _Transient as e:
            if clock() + delay > deadline:
                raise TokenkeeperUnreachable(
                    f"tokenkeeper at {base} refused or dropped every connection for {retry_for} s "
                    f"(last: {e.__cause__}); it may be restarting or not running"
                ) from None
            sleep(delay)
            delay = min(delay * 2, 5)


def _target(audience, idp):
    """Return the query parameters naming the token asked for: {}, {"audience": A} or {"idp": ALIAS}."""
    if audience is not None and idp is not None:
        raise ValueError("ask for a token for an audience or of an identity provider, not both")
    for name, value in (("audience", audience), ("idp", idp)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be a non-empty string, not {value!r}")
        if value is not None:
            return {name: value}
    return {}


def _confirmed(answer, target):
    """Return answer if it names the audience or identity provider asked for (target)."""
    for name, value in target.items():
        if answer.get(name) != value:
            what = "audience" if name == "audience" else "identity provider"
            raise TokenkeeperError(
                f"tokenkeeper answered without the token for {what} {value!r}: this tokenkeeper does not "
                f"serve {what} tokens (its fresh-token ignored ?{name}=), so its answer is not used"
            )
    return answer


class _Transient(Exception):
    """A refused or reset connection, or a 429 (tokenkeeper busy), worth trying again."""


def _ask(req, timeout, target):
    """Make one request; return the answer, or raise TokenkeeperError or _Transient."""
    try:
        with _opener.open(req, timeout=timeout) as resp:
            answer = json.load(resp)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 429:  # too many new tokens at once: tokenkeeper asks to retry shortly
                raise _Transient() from None
            raise _http_error(e, target) from None
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


# _ERRORS maps tokenkeeper's error codes to the exceptions raised for them.
_ERRORS = {
    "audience_not_allowed": NotAllowed,
    "identity_provider_not_allowed": NotAllowed,
    "exchange_refused": ExchangeRefused,
    "idp_token_refused": ExchangeRefused,
}


def _http_error(e, target):
    """Return the error for tokenkeeper's error answer ``e`` to a request for ``target``."""
    if 300 <= e.code < 400:
        return TokenkeeperError(
            f"tokenkeeper answered HTTP {e.code} redirecting to {e.headers.get('Location', '?')}; "
            "not followed, since it would carry the server's token there: check TOKENKEEPER_URL",
            status=e.code,
        )
    code, message = _error_body(e)
    retry_after = _retry_after(e.headers)
    if e.code == 409:
        return LoginRequired(message, status=409, code=code, retry_after=retry_after)
    if e.code == 401:
        # The hub refuses the server's own token: JupyterHub 5 (and 6 with
        # auth_refresh_strict) does so once the user must log in again.
        return LoginRequired(f"the hub refuses this server's JupyterHub token (HTTP 401: {message}): log in to "
                             "JupyterHub again, or restart the server if that does not help", status=401, code=code,
                             retry_after=retry_after)
    cls = _ERRORS.get(code, TokenkeeperError)
    if cls is NotAllowed and target:
        name, value = next(iter(target.items()))
        setting = "audiences" if name == "audience" else "identity_providers"
        message = f"{message} ({name} {value!r}; an admin allows it in tokenkeeper's {setting} setting)"
    return cls(f"HTTP {e.code}: {message}", status=e.code, code=code, retry_after=retry_after)


def _retry_after(headers):
    """Return the seconds an answer's ``Retry-After`` asks to wait (delay-seconds or an HTTP date), or None."""
    value = (headers.get("Retry-After") or "").strip() if headers is not None else ""
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": no zone said; HTTP dates are GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def _error_body(e):
    """Return the error code and message of tokenkeeper's JSON error answer, or (None, the HTTP reason)."""
    try:
        body = json.load(e)
        return body.get("error"), body["message"]
    except Exception:
        return None, e.reason


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
