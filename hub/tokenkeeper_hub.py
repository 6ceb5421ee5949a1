"""JupyterHub configuration for tokenkeeper.

Import this file from ``jupyterhub_config.py`` (or copy it next to it) and call
:func:`configure`::

    import sys
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
puts a fresh access token into each server's environment, and installs a
``refresh_user_hook`` that makes tokenkeeper the only party that spends the
users' refresh tokens (two refreshers racing on one refresh token end the
Keycloak session when refresh-token rotation is on).
"""

import json
import secrets
from urllib.parse import quote, urlencode

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

# SCOPE_TOKENS lets a token ask tokenkeeper for another user's access token.
SCOPE_TOKENS = "custom:tokenkeeper:tokens"
# SCOPE_SERVICE_ACCOUNT lets a token ask for the service account's token.
SCOPE_SERVICE_ACCOUNT = "custom:tokenkeeper:service-account"

CUSTOM_SCOPES = {
    SCOPE_TOKENS: {
        "description": "Read any user's fresh Keycloak access token from tokenkeeper.",
    },
    SCOPE_SERVICE_ACCOUNT: {
        "description": "Read tokenkeeper's service-account token and job status.",
    },
}


def service_roles(name="tokenkeeper", hook_service=None, revoke_tokens=True, stop_servers=False):
    """Return the roles tokenkeeper and its spawner hook need.

    tokenkeeper reads and writes auth_state (``admin:users``; reading alone
    would be ``admin:auth_state`` plus a read scope, writing needs
    ``admin:users``), lists running servers (``read:servers``), and, to log
    out users whose Keycloak session ended, lists and revokes their browser
    session tokens (``read:tokens``, ``tokens``) and optionally stops their
    servers (``delete:servers``).
    """
    scopes = ["admin:users", "read:servers"]
    if revoke_tokens:
        scopes += ["read:tokens", "tokens"]
    if stop_servers:
        scopes.append("delete:servers")
    roles = [{
        "name": f"{name}-service",
        "description": "tokenkeeper: refresh users' tokens in auth_state",
        "scopes": scopes,
        "services": [name],
    }]
    if hook_service:
        roles.append({
            "name": f"{name}-hook",
            "description": "tokenkeeper: the hub's pre-spawn hook",
            "scopes": [SCOPE_TOKENS, f"access:services!service={name}"],
            "services": [hook_service],
        })
    return roles


def server_role(name="tokenkeeper"):
    """Return the ``server`` role, extended so a user's server token may call tokenkeeper.

    A server token then gets its own user's access token from tokenkeeper,
    never anybody else's.
    """
    return {
        "name": "server",
        "description": "Post activity; call tokenkeeper for the server's own user",
        "scopes": [
            "users:activity!user",
            "access:servers!server",
            f"access:services!service={name}",
        ],
    }


def make_pre_spawn_hook(service_url, token, env_name="KEYCLOAK_ACCESS_TOKEN",
                        notebook_url=None, min_valid=300, required=True, timeout=20):
    """Return an async ``pre_spawn_hook`` that puts a fresh access token into the server's environment.

    The hook asks tokenkeeper (at ``service_url``, including the service
    prefix) for the spawning user's token with ``min_valid`` seconds left, and
    sets ``env_name``. ``TOKENKEEPER_URL`` tells the server where to ask for
    later tokens. With ``required`` a failure stops the spawn with a clear
    message; without it the server starts without a token.
    """
    base = service_url.rstrip("/") + "/"

    async def pre_spawn_hook(spawner):
        query = urlencode({"user": spawner.user.name, "min_valid": min_valid})
        try:
            resp = await AsyncHTTPClient().fetch(
                f"{base}fresh-token?{query}",
                headers={"Authorization": f"token {token}"},
                request_timeout=timeout,
            )
            access_token = json.loads(resp.body)["access_token"]
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


def _describe(e):
    """Return the message of a tokenkeeper JSON error, or the exception text."""
    if isinstance(e, HTTPClientError) and e.response is not None:
        try:
            return json.loads(e.response.body)["message"]
        except Exception:
            return f"HTTP {e.code}"
    return str(e)


def refresh_user_hook(authenticator, user, auth_state):
    """Leave token refresh to tokenkeeper; ask for a new login once it cleared auth_state.

    tokenkeeper clears a user's auth_state when their Keycloak SSO session has
    ended, so an empty auth_state (or one without a refresh token) sends the
    browser back to the login page.
    """
    if not auth_state or not auth_state.get("refresh_token"):
        return False
    return True


def configure(c, *, command, url, environment=None, name="tokenkeeper",
              env_name="KEYCLOAK_ACCESS_TOKEN", hook_service="tokenkeeper-hook",
              notebook_url=None, revoke_tokens=True, stop_servers=False,
              spawn_requires_token=True):
    """Configure JupyterHub ``c`` to run tokenkeeper and use it.

    ``command`` and ``url`` start and reach the managed service;
    ``environment`` carries its settings (the service does not inherit the
    hub's environment). The spawner hook authenticates with a token generated
    at every hub start for the external service ``hook_service``.
    """
    hook_token = secrets.token_hex(32)
    c.JupyterHub.services.extend([
        {"name": name, "url": url, "command": list(command), "environment": dict(environment or {})},
        {"name": hook_service, "api_token": hook_token, "display": False},
    ])
    c.JupyterHub.custom_scopes.update(CUSTOM_SCOPES)
    c.JupyterHub.load_roles.extend(
        service_roles(name, hook_service, revoke_tokens, stop_servers) + [server_role(name)]
    )
    c.JupyterHub.extra_user_scopes.add(f"access:services!service={name}")
    service_url = f"{url.rstrip('/')}/services/{quote(name)}/"
    c.Spawner.pre_spawn_hook = make_pre_spawn_hook(
        service_url, hook_token, env_name, notebook_url, required=spawn_requires_token,
    )
    c.OAuthenticator.refresh_user_hook = refresh_user_hook
    c.OAuthenticator.enable_auth_state = True
