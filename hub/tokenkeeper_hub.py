"""JupyterHub configuration for tokenkeeper.

Import this file from ``jupyterhub_config.py`` (or copy it next to it) and call
:func:`configure`::

    import os, sys
    sys.path.insert(0, "/opt/tokenkeeper/hub")
    import tokenkeeper_hub

    tokenkeeper_hub.configure(
        c,
        command=["/usr/local/bin/tokenkeeper"],
        url="http://127.0.0.1:10101",
        environment={
            "TOKENKEEPER_ISSUER_URL": "https://keycloak.example.org/realms/jupyter",
            "TOKENKEEPER_CLIENT_ID": "jupyterhub",
            "TOKENKEEPER_CLIENT_SECRET": os.environ["OAUTH_CLIENT_SECRET"],
            "TOKENKEEPER_STATE_KEY": os.environ["TOKENKEEPER_STATE_KEY"],
        },
    )

It registers tokenkeeper as a managed service with the least privileges it
needs, defines tokenkeeper's custom scopes, installs a ``pre_spawn_hook`` that
puts a fresh access token into each server's environment (asking with the
server's own token, so no hub token exists that can read every user's
token), and installs a ``refresh_user_hook`` that makes tokenkeeper the only
party that spends non-admin users' refresh tokens (two refreshers racing on
one refresh token end the Keycloak session when refresh-token rotation is
on).
"""

import base64
import binascii
import json
import time
from urllib.parse import quote, urlencode

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

# SCOPE_TOKENS lets a token ask tokenkeeper for another user's access token
# (and their refresh status). Nothing is granted it by default: a hub admin
# who gives it to a role gives that role every user's Keycloak access token.
SCOPE_TOKENS = "custom:tokenkeeper:tokens"
# SCOPE_SERVICE_ACCOUNT lets a token ask for the service account's token and
# job status.
SCOPE_SERVICE_ACCOUNT = "custom:tokenkeeper:service-account"

CUSTOM_SCOPES = {
    SCOPE_TOKENS: {
        "description": "Read any user's fresh Keycloak access token from tokenkeeper.",
    },
    SCOPE_SERVICE_ACCOUNT: {
        "description": "Read tokenkeeper's service-account token and job status.",
    },
}

# CLOCK_LEEWAY is how many seconds past its expiry a refresh token still
# counts as valid, so that a hub clock running ahead of Keycloak's does not
# send users to the login page early.
CLOCK_LEEWAY = 15


def access_scope(name="tokenkeeper"):
    """Return the scope that lets a token call the service ``name`` at all."""
    return f"access:services!service={name}"


def service_roles(name="tokenkeeper", *, revoke_tokens=False, stop_servers=False):
    """Return the role tokenkeeper's service needs, and nothing more.

    ``admin:users`` writes auth_state (JupyterHub's ``PATCH /users/{name}``
    needs it) and includes what reading auth_state needs
    (``admin:auth_state`` plus a read scope) and ``list:users``.
    ``read:servers`` tells who is running.

    ``stop_servers`` adds ``delete:servers`` (a logout stops the user's
    servers).

    ``revoke_tokens`` adds ``read:tokens`` and ``tokens`` (a logout revokes
    the user's browser-session hub tokens). JupyterHub has no narrower scope
    that deletes a user's tokens: ``tokens`` also creates them, for any user
    including hub admins, with all of that user's permissions. With it,
    whoever holds tokenkeeper's hub token can run code in every user's
    server and act as any admin. Leave it off unless revocation is worth
    that.
    """
    scopes = ["admin:users", "read:servers"]
    if revoke_tokens:
        scopes += ["read:tokens", "tokens"]
    if stop_servers:
        scopes.append("delete:servers")
    return [{
        "name": f"{name}-service",
        "description": "tokenkeeper: refresh users' tokens in auth_state",
        "scopes": scopes,
        "services": [name],
    }]


def server_role(name="tokenkeeper"):
    """Return the ``server`` role, extended so a user's server token may call tokenkeeper.

    A server token then gets its own user's access token from tokenkeeper,
    never anybody else's. The pre-spawn hook authenticates with it too.
    """
    return {
        "name": "server",
        "description": "Post activity; call tokenkeeper for the server's own user",
        "scopes": [
            "users:activity!user",
            "access:servers!server",
            access_scope(name),
        ],
    }


def make_pre_spawn_hook(service_url, *, env_name="KEYCLOAK_ACCESS_TOKEN", notebook_url=None,
                        min_valid=300, required=True, timeout=20):
    """Return an async ``pre_spawn_hook`` that puts a fresh access token into the server's environment.

    The hook asks tokenkeeper (at ``service_url``, including the service
    prefix) for a token with ``min_valid`` seconds left, authenticating with
    the token JupyterHub has just made for the server being spawned
    (``spawner.api_token``, set before the hook runs). That token can fetch
    only its own user's token, so the hook never asks by name. It sets
    ``env_name``, and ``TOKENKEEPER_URL`` tells the server where to ask for
    later tokens. With ``required`` a failure stops the spawn: 403 asking the
    user to log in again when their Keycloak session has ended, else 503 with
    tokenkeeper's message; without it the server starts without a token.
    """
    base = service_url.rstrip("/") + "/"

    async def pre_spawn_hook(spawner):
        try:
            access_token = await _fetch_token(base, spawner.api_token, min_valid, timeout)
        except Exception as e:
            message = _describe(e)
            spawner.log.warning("tokenkeeper: no fresh token for %s: %s", spawner.user.name, message)
            if required:
                status = 403 if isinstance(e, HTTPClientError) and e.code == 409 else 503
                raise web.HTTPError(status, f"No fresh Keycloak token: {message}") from None
            return
        # Assign a new dict: the configured dict may be shared by every spawner.
        spawner.environment = {
            **spawner.environment,
            env_name: access_token,
            "TOKENKEEPER_URL": notebook_url or base,
        }

    return pre_spawn_hook


async def _fetch_token(base, server_token, min_valid, timeout):
    """Ask tokenkeeper for the server token's own user's access token."""
    if not server_token:
        raise RuntimeError("the spawner has no API token to ask tokenkeeper with")
    resp = await AsyncHTTPClient().fetch(
        f"{base}fresh-token?{urlencode({'min_valid': min_valid})}",
        headers={"Authorization": f"token {server_token}"},
        request_timeout=timeout,
    )
    return json.loads(resp.body)["access_token"]


def _describe(e):
    """Return the message of a tokenkeeper JSON error, or the exception text."""
    if isinstance(e, HTTPClientError) and e.response is not None:
        try:
            return json.loads(e.response.body)["message"]
        except Exception:
            return f"HTTP {e.code}"
    return str(e)


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


# _BOOLS are the spellings tokenkeeper's configuration accepts (Go's strconv.ParseBool).
_BOOLS = {**dict.fromkeys(["1", "t", "T", "TRUE", "true", "True"], True),
          **dict.fromkeys(["0", "f", "F", "FALSE", "false", "False"], False)}


def _bool_env(environment, key, option, value):
    """Set ``environment[key]`` to configure()'s ``option``; refuse a contradicting value already there."""
    given = environment.get(key)
    if given is not None:
        parsed = _BOOLS.get(str(given))
        if parsed is None:
            raise ValueError(f"tokenkeeper: environment {key}={given!r} is not a boolean")
        if parsed != value:
            raise ValueError(
                f"tokenkeeper: environment {key}={given!r} contradicts configure({option}={value}); "
                f"set {option} only"
            )
    environment[key] = "true" if value else "false"


def configure(c, *, command, url, environment=None, name="tokenkeeper",
              env_name="KEYCLOAK_ACCESS_TOKEN", notebook_url=None, revoke_tokens=False,
              stop_servers=False, refresh_admins=False, spawn_requires_token=True):
    """Configure JupyterHub ``c`` to run tokenkeeper and use it.

    ``command`` and ``url`` start and reach the managed service;
    ``environment`` carries its settings (the service does not inherit the
    hub's environment). ``revoke_tokens``, ``stop_servers`` and
    ``refresh_admins`` set both the service's role and its
    ``TOKENKEEPER_REVOKE_TOKENS``, ``TOKENKEEPER_STOP_SERVERS`` and
    ``TOKENKEEPER_REFRESH_ADMINS``.

    ``revoke_tokens`` gives tokenkeeper the ``tokens`` scope, which also
    creates hub tokens for any user, hub admins included: see
    :func:`service_roles`.

    ``refresh_admins`` makes tokenkeeper refresh hub admins too. JupyterHub
    lets only an admin write an admin's auth_state, so tokenkeeper's service
    then gets the ``admin`` role: every scope, including creating tokens for
    anyone, starting and stopping every server, and changing roles. Whoever
    holds tokenkeeper's hub token then owns the hub. JupyterHub keeps role
    memberships in its database: turning this off again does not take the
    role away (see README.md, "Scopes and roles").

    The pre-spawn hook authenticates with each server's own token; it needs
    ``access:services!service=<name>`` in the server's token, which
    :func:`server_role` grants (if ``c.Spawner.server_token_scopes`` is set,
    the scope is added to it).
    """
    env = dict(environment or {})
    _bool_env(env, "TOKENKEEPER_REVOKE_TOKENS", "revoke_tokens", revoke_tokens)
    _bool_env(env, "TOKENKEEPER_STOP_SERVERS", "stop_servers", stop_servers)
    _bool_env(env, "TOKENKEEPER_REFRESH_ADMINS", "refresh_admins", refresh_admins)
    service = {"name": name, "url": url, "command": list(command), "environment": env}
    if refresh_admins:
        # The service's admin flag puts it into the admin role and leaves the
        # role's other members alone. (An admin role in load_roles would make
        # the role's user list exactly c.Authenticator.admin_users, dropping
        # admins made in the admin page.)
        service["admin"] = True
    c.JupyterHub.services.append(service)
    c.JupyterHub.custom_scopes.update(CUSTOM_SCOPES)
    c.JupyterHub.load_roles.extend(
        service_roles(name, revoke_tokens=revoke_tokens, stop_servers=stop_servers) + [server_role(name)]
    )
    c.JupyterHub.extra_user_scopes.add(access_scope(name))
    _extend_server_token_scopes(c, access_scope(name))
    service_url = f"{url.rstrip('/')}/services/{quote(name)}/"
    c.Spawner.pre_spawn_hook = make_pre_spawn_hook(
        service_url, env_name=env_name, notebook_url=notebook_url, required=spawn_requires_token,
    )
    c.OAuthenticator.refresh_user_hook = make_refresh_user_hook(refresh_admins)
    c.OAuthenticator.enable_auth_state = True


def _extend_server_token_scopes(c, scope):
    """Add ``scope`` to ``c.Spawner.server_token_scopes`` if it is configured.

    Unset, JupyterHub uses the ``server`` role, which :func:`server_role`
    extends.
    """
    if "server_token_scopes" not in c.Spawner:
        return
    configured = c.Spawner.server_token_scopes
    if callable(configured):
        async def server_token_scopes(spawner):
            scopes = configured(spawner)
            if hasattr(scopes, "__await__"):
                scopes = await scopes
            return [*scopes, scope] if scopes else scopes
        c.Spawner.server_token_scopes = server_token_scopes
    elif configured:
        c.Spawner.server_token_scopes = [*configured, scope]
