"""The hooks tokenkeeper installs in JupyterHub, and how they chain with an admin's own.

- :func:`make_pre_spawn_hook`: a fresh access token into each server's environment;
- :func:`make_refresh_user_hook`: tokenkeeper is the only party that spends
  non-admin users' refresh tokens;
- :func:`make_post_auth_hook`: a login without a refresh token is refused
  with a clear message instead of ending in a login loop.

Each ``chain_*`` function runs an admin's existing hook together with
tokenkeeper's.
"""

import asyncio
import base64
import binascii
import inspect
import json
import time
from urllib.parse import urlencode

from tornado import web
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.simple_httpclient import HTTPStreamClosedError, SimpleAsyncHTTPClient

from .tokenfiles import DEFAULT_TOKEN_DIR, check_token_dir, normalize_token_files, token_file_environment

# CLOCK_LEEWAY is how many seconds past its expiry a refresh token still
# counts as valid, so that a hub clock running ahead of Keycloak's does not
# send users to the login page early.
CLOCK_LEEWAY = 15

# RETRY_FOR is how long, in seconds, the pre-spawn hook keeps retrying while
# tokenkeeper refuses or resets connections: after a crash the hub restarts
# its managed service only at its next poll.
RETRY_FOR = 45


class TokenkeeperUnreachable(Exception):
    """tokenkeeper refused or reset every connection for the whole retry time."""


async def _maybe_await(value):
    """Return value, awaited if it is awaitable (hooks may be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


# --- pre_spawn_hook -------------------------------------------------------------


def make_pre_spawn_hook(service_url, *, env_name="KEYCLOAK_ACCESS_TOKEN", notebook_url=None,
                        min_valid=300, required=True, token_files=None, token_dir=DEFAULT_TOKEN_DIR,
                        token_paths_per_user=False, timeout=20, retry_for=RETRY_FOR, sleep=asyncio.sleep,
                        clock=time.monotonic, spawn_secret=None):
    """Return an async ``pre_spawn_hook`` that puts a fresh access token into the server's environment.

    The hook asks tokenkeeper (at ``service_url``, including the service
    prefix) for a token with ``min_valid`` seconds left, authenticating with
    the token JupyterHub has just made for the server being spawned
    (``spawner.api_token``, set before the hook runs). That token can fetch
    only its own user's token. With ``spawn_secret`` (the secret tokenkeeper
    has as ``TOKENKEEPER_SPAWN_SECRET``) it also sends that secret, in the
    ``X-Tokenkeeper-Spawn-Secret`` header, with the spawning user's name
    (``?user=``): tokenkeeper then serves that user's access token without
    a hub lookup of the server's token, which a flood of made-up tokens
    would make wait. It sets ``env_name``, and ``TOKENKEEPER_URL`` tells the server where to ask for
    later tokens. The hook's attributes ``service_url`` and ``notebook_url``
    say where it asks and where servers will ask, ``sends_spawn_secret``
    whether it sends a spawn secret.

    While tokenkeeper refuses or resets connections (it is being restarted)
    the hook retries with backoff for up to ``retry_for`` seconds. It never
    follows a redirect, which would carry the server's token elsewhere. When
    the token has fewer than ``min_valid`` seconds left (the realm's tokens
    are shorter, or Keycloak could not be reached) it logs a warning saying
    so. With ``required`` a failure stops the spawn: 403 asking the user to
    log in again when their Keycloak session has ended, else 503 with
    tokenkeeper's message; without it the server starts without a token.

    ``token_files`` (see :mod:`tokenkeeper_hub.tokenfiles`) tells the
    server which token files to keep fresh, in ``token_dir`` unless a file
    names its own path: a dict, or a function of the spawner that returns
    one (or None for no files; it may be async), say to give files to some
    groups only. ``token_paths_per_user`` accepts a ``token_dir`` or path
    without ``{username}`` outside the home directory (each server has a
    file system of its own). A dict with a problem, or a ``token_dir`` with
    one, raises ValueError here; a function's answer with a problem fails
    the spawn with 500 saying what it is. The files' variables are set
    along with the token.
    """
    base = service_url.rstrip("/") + "/"
    if token_files is not None:
        check_token_dir(token_dir, token_paths_per_user)
    if token_files is not None and not callable(token_files):
        token_files = normalize_token_files(token_files, token_dir, token_paths_per_user)

    async def files_environment(spawner):
        files = await _maybe_await(token_files(spawner)) if callable(token_files) else token_files
        if not files:
            return {}
        if callable(token_files):
            files = normalize_token_files(files, token_dir, token_paths_per_user)
        return token_file_environment(files, spawner.user.name)

    async def pre_spawn_hook(spawner):
        try:
            files_env = await files_environment(spawner)
        except Exception as e:
            spawner.log.error("tokenkeeper: token files for %s: %s", spawner.user.name, e)
            raise web.HTTPError(500, f"The hub's token_files setting is wrong: {e}") from None
        try:
            answer = await _fetch_token(base, spawner.api_token, min_valid, timeout,
                                        retry_for=retry_for, sleep=sleep, clock=clock,
                                        user=spawner.user.name, spawn_secret=spawn_secret)
        except Exception as e:
            message = describe_error(e)
            spawner.log.warning("tokenkeeper: no fresh token for %s: %s", spawner.user.name, message)
            if required:
                status = 403 if isinstance(e, HTTPClientError) and e.code == 409 else 503
                raise web.HTTPError(status, f"No fresh Keycloak token: {message}") from None
            return
        shortfall = short_token_message(answer, min_valid)
        if shortfall:
            spawner.log.warning("tokenkeeper: the token for %s: %s", spawner.user.name, shortfall)
        # Assign a new dict: the configured dict may be shared by every spawner.
        spawner.environment = {
            **spawner.environment,
            env_name: answer["access_token"],
            "TOKENKEEPER_URL": notebook_url or base,
            **files_env,
        }

    # Where the hook asks and where servers will ask, for an admin (or a
    # test of the configuration) to read back.
    pre_spawn_hook.service_url = base
    pre_spawn_hook.notebook_url = notebook_url or base
    # Whether it proves itself with a spawn secret (the secret itself is not shown).
    pre_spawn_hook.sends_spawn_secret = bool(spawn_secret)
    return pre_spawn_hook


# SPAWN_SECRET_HEADER carries the spawn secret to tokenkeeper.
SPAWN_SECRET_HEADER = "X-Tokenkeeper-Spawn-Secret"


async def _fetch_token(base, server_token, min_valid, timeout, *, retry_for, sleep, clock, user=None,
                       spawn_secret=None):
    """Ask tokenkeeper for the server token's own user's access token; return its answer.

    With ``spawn_secret`` the request also carries the secret and names
    ``user``, the server token's user, so that tokenkeeper needs no hub
    lookup; a tokenkeeper without the secret configured goes by the token.
    """
    if not server_token:
        raise RuntimeError("the spawner has no API token to ask tokenkeeper with")
    query = {"min_valid": min_valid}
    headers = {"Authorization": f"token {server_token}"}
    if spawn_secret:
        query["user"] = user
        headers[SPAWN_SECRET_HEADER] = spawn_secret
    request = HTTPRequest(
        f"{base}fresh-token?{urlencode(query)}",
        headers=headers,
        request_timeout=timeout,
        follow_redirects=False,
    )
    # The simple client whatever the hub configured: its connection errors are
    # known, and it does not send loopback traffic through an HTTP proxy.
    client = SimpleAsyncHTTPClient()
    deadline = clock() + retry_for
    delay = 0.5
    while True:
        try:
            resp = await client.fetch(request)
            break
        except HTTPClientError as e:
            # 429: too many new tokens at once; tokenkeeper asks to retry shortly.
            if e.code != 429 or clock() + delay > deadline:
                raise
            await sleep(delay)
            delay = min(delay * 2, 5)
        except (ConnectionRefusedError, ConnectionResetError, HTTPStreamClosedError) as e:
            if clock() + delay > deadline:
                raise TokenkeeperUnreachable(
                    f"tokenkeeper at {base} refused or dropped every connection for {retry_for} s "
                    f"(last: {e}); it may be restarting or not running"
                ) from None
            await sleep(delay)
            delay = min(delay * 2, 5)
    return _token_answer(resp.body)


def _token_answer(body):
    """Return fresh-token's JSON answer; it must carry an access token."""
    answer = json.loads(body)
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
        raise ValueError("tokenkeeper's answer carries no access token")
    return answer


def short_token_message(answer, min_valid):
    """Return why the token in fresh-token's ``answer`` has fewer than ``min_valid`` seconds left, or None.

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
        return (f"it has {left:.0f} s left, less than the {min_valid} s asked for: the realm's access "
                f"tokens live {exp - iat:.0f} s, and tokenkeeper never asks more of a token than half "
                f"its lifetime; ask for at most {(exp - iat) // 2:.0f} s, or lengthen the realm's "
                f"Access Token Lifespan")
    return (f"it has {left:.0f} s left, less than the {min_valid} s asked for: tokenkeeper could not "
            f"refresh it (is Keycloak reachable?) and returned the current one")


def describe_error(e):
    """Return the message of a tokenkeeper JSON error, or a description of the failure."""
    if isinstance(e, HTTPClientError) and e.response is not None:
        if 300 <= e.code < 400:
            location = e.response.headers.get("Location", "?")
            return (f"tokenkeeper answered HTTP {e.code} redirecting to {location}; not followed, "
                    f"since it would carry the server's token and the spawn secret there: check the service URL")
        try:
            return json.loads(e.response.body)["message"]
        except Exception:
            return f"HTTP {e.code}"
    return str(e)


# --- refresh_user_hook ------------------------------------------------------------


def make_refresh_user_hook(refresh_admins=False, now=time.time):
    """Return a ``refresh_user_hook`` for OAuthenticator 17.3 or later.

    For users tokenkeeper refreshes, the hook never spends a refresh token:
    it answers ``False`` (log in again) when auth_state is empty, has no
    refresh token, or its refresh token has expired (more than
    ``CLOCK_LEEWAY`` seconds ago), and ``True`` otherwise. tokenkeeper clears
    the auth_state of users whose Keycloak session ended, so their browsers
    go back to the login page.

    Hub admins are not refreshed by tokenkeeper unless ``refresh_admins``
    (JupyterHub lets only an admin write an admin's auth_state). For them the
    hook answers ``None``: OAuthenticator's own ``refresh_user`` runs, which
    refreshes their tokens on their own hub requests.
    """

    def refresh_user_hook(authenticator, user, auth_state):
        if getattr(user, "admin", False) and not refresh_admins:
            return None
        if not auth_state or not auth_state.get("refresh_token"):
            return False
        expiry = refresh_expiry(auth_state)
        if expiry is not None and now() > expiry + CLOCK_LEEWAY:
            return False
        return True

    return refresh_user_hook


# refresh_user_hook is the hook for the default configuration: admins are
# left to OAuthenticator's own refresh.
refresh_user_hook = make_refresh_user_hook()


def refresh_expiry(auth_state):
    """Return when auth_state's refresh token expires, in Unix seconds, or None when unknown.

    The refresh token's own ``exp`` claim counts when it is a JWT that has
    one (Keycloak's are); otherwise ``token_response.refresh_expires_in``
    counted from the access token's ``iat``. Keycloak's offline tokens (no
    ``exp``, or ``refresh_expires_in`` 0) never expire by this measure.
    """
    exp = _claim(auth_state.get("refresh_token"), "exp")
    if exp is not None:
        return exp
    response = auth_state.get("token_response")
    if not isinstance(response, dict):
        return None
    lifetime = response.get("refresh_expires_in")
    issued = _claim(response.get("access_token") or auth_state.get("access_token"), "iat")
    if _positive_number(lifetime) and issued is not None:
        return issued + lifetime
    return None


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
    return value if _positive_number(value) else None


def _positive_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


# --- post_auth_hook -----------------------------------------------------------------


def make_post_auth_hook():
    """Return a ``post_auth_hook`` that refuses a login whose tokens carry no refresh token.

    Without a refresh token tokenkeeper cannot keep the user's tokens fresh,
    and the ``refresh_user_hook`` would send the browser back to the login
    page at every auth refresh: a login loop. The hook ends the login with
    403 and says what to change in Keycloak instead. Logins without
    auth_state (``enable_auth_state`` off) pass.
    """

    def post_auth_hook(authenticator, handler, authentication):
        state = (authentication or {}).get("auth_state")
        if isinstance(state, dict) and not state.get("refresh_token"):
            raise web.HTTPError(
                403,
                "Keycloak issued no refresh token for this login, so tokenkeeper cannot keep its "
                "tokens fresh: turn on 'Use refresh tokens' for the hub's client, and do not "
                "request the login with a scope that drops it",
            )
        return authentication

    return post_auth_hook


# --- chaining with an admin's hooks ---------------------------------------------------


def chain_pre_spawn_hooks(theirs, ours):
    """Return a ``pre_spawn_hook`` running ``theirs`` (sync or async), then ``ours``.

    The admin's hook runs first: a spawn it refuses costs tokenkeeper
    nothing, and an environment it replaces still gets the token.
    """

    async def pre_spawn_hook(spawner):
        await _maybe_await(theirs(spawner))
        await _maybe_await(ours(spawner))

    for attr in ("service_url", "notebook_url", "sends_spawn_secret"):
        if hasattr(ours, attr):
            setattr(pre_spawn_hook, attr, getattr(ours, attr))
    return pre_spawn_hook


def chain_refresh_user_hooks(theirs, ours):
    """Return a ``refresh_user_hook`` combining an admin's hook with tokenkeeper's.

    ``False`` from either means log in again. Otherwise the admin's answer
    stands (``True`` or an auth model), and when the admin's hook answers
    ``None`` (no opinion) tokenkeeper's answer does (``None`` lets
    OAuthenticator refresh, as for hub admins).
    """

    async def refresh_user_hook(authenticator, user, auth_state):
        answer = await _maybe_await(theirs(authenticator, user, auth_state))
        if answer is False:
            return False
        own = await _maybe_await(ours(authenticator, user, auth_state))
        if own is False:
            return False
        return own if answer is None else answer

    return refresh_user_hook


def chain_post_auth_hooks(theirs, ours):
    """Return a ``post_auth_hook`` passing the admin's hook's result on to tokenkeeper's."""

    async def post_auth_hook(authenticator, handler, authentication):
        authentication = await _maybe_await(theirs(authenticator, handler, authentication))
        return await _maybe_await(ours(authenticator, handler, authentication))

    return post_auth_hook
