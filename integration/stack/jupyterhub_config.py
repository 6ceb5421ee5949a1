"""JupyterHub configuration for tokenkeeper's demo and integration tests.

Everything listens on 127.0.0.1. Ports come from TK_PORT_BASE (B): the hub's
public URL B, the proxy API B+1, the hub API B+81, Keycloak B+80 and
tokenkeeper B+23; the hub's base URL from TK_BASE_URL (default "/"). The
stack (integration/stack.go) sets the TK_* variables.

The part between the "README example" markers is README.md's example
jupyterhub_config.py with the test stack's values in place of the
example's; test_readme_example.py keeps the two identical in substance.
What only the tests need comes before and after it, and within it only as
``**`` spreads (``test_options``, ``test_settings``).
"""
import os

env = os.environ
base = int(env["TK_PORT_BASE"])
repo = env["TK_REPO"]
state = env["TK_STATE_DIR"]
cache = env["TK_CACHE"]

# The hub's base URL: "/", unless a test restarts the hub under another
# (TK_BASE_URL, Stack.RestartHubAt). It is bind_url's path (setting base_url
# as well would put the proxy back on JupyterHub's default address);
# configure() below follows it.
hub_base = env.get("TK_BASE_URL", "/")
c.JupyterHub.bind_url = f"http://127.0.0.1:{base}{hub_base}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{base + 81}"
c.JupyterHub.db_url = f"sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{state}/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{base + 1}"
c.ConfigurableHTTPProxy.command = [f"{cache}/node/node_modules/.bin/configurable-http-proxy"]
c.ConfigurableHTTPProxy.pid_file = f"{state}/proxy.pid"

# What a test set for tokenkeeper (TOKENKEEPER_* in the stack's environment),
# taken before the lines below give the README example its variables.
test_overrides = {k: v for k, v in env.items() if k.startswith("TOKENKEEPER_")}

# The secrets the README example reads, under its names, from this run's.
env["OAUTH_CLIENT_SECRET"] = env["TK_CLIENT_SECRET"]
env["TOKENKEEPER_STATE_KEY"] = env["TK_STATE_KEY"]
env["KEYCLOAK_SA_SECRET"] = env["TK_SA_SECRET"]
env["KEYCLOAK_ADMIN_CLIENT_SECRET"] = env["TK_ADMIN_SECRET"]

# Hub admins: tokenkeeper leaves them to OAuthenticator's own refresh unless
# TOKENKEEPER_REFRESH_ADMINS is true. mallory is for the admin tests; fay
# for the cross-user test; ada looks after tokenkeeper's page in the
# browser test (sessionpage_test.go), with the role given her below.
c.Authenticator.admin_users = {"mallory", "fay", "ada"}

# The servers record their environment (singleuser.sh) and run from the
# virtualenv of the hub under test.
c.Spawner.ip = "127.0.0.1"
c.Spawner.environment = {"TK_STATE_DIR": state, "TK_VENV": env["TK_VENV"]}
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 90


def flag(name):
    """Read a boolean TOKENKEEPER_* variable a test set; off when unset."""
    return env.get(name, "false").lower() in ("1", "t", "true")


# The token-file tests' users (tokenfiles_test.go) get token files, and bob,
# whose files the browser test (sessionpage_test.go) sees go when an admin
# logs him out everywhere; nobody else does, since a server's files are
# refreshed at two thirds of each token's life, which would change what the
# schedule tests see.
TOKEN_FILE_USERS = {"tess", "theo", "bob"}


def token_files(spawner):
    """The token files of the token-file tests' servers: each format, and an audience."""
    if spawner.user.name not in TOKEN_FILE_USERS:
        return None
    return {
        "base": {},
        "header": {"format": "header"},
        "json": {"format": "json"},
        "trino": {"audience": "trino", "format": "json"},
    }


# No test asserts that a logout revokes hub tokens, so the stack runs with
# the least privileges, as configure() defaults to. A test that needs one of
# these options sets the variable in the stack's environment.
test_options = {
    "revoke_tokens": flag("TOKENKEEPER_REVOKE_TOKENS"),
    "stop_servers": flag("TOKENKEEPER_STOP_SERVERS"),
    "refresh_admins": flag("TOKENKEEPER_REFRESH_ADMINS"),
    "token_files": token_files,
    "token_dir": f"{state}/tokens/{{username}}",
}
# Faster timings, debug logs, the tests' job API, audience and identity
# provider; any TOKENKEEPER_* variable in the stack's environment wins.
test_settings = {
    "TOKENKEEPER_SWEEP_INTERVAL": env.get("TK_SWEEP_INTERVAL", "2s"),
    "TOKENKEEPER_REFRESH_WINDOW": "5s",
    "TOKENKEEPER_LOG_LEVEL": "debug",
    "TOKENKEEPER_SERVICE_TOKEN_AUDIENCES": "trino",
    "TOKENKEEPER_AUDIENCES": "trino",
    "TOKENKEEPER_IDENTITY_PROVIDERS": "external",
    "TOKENKEEPER_JOB_API_URL": env.get("TK_JOB_API_URL", ""),
    "TOKENKEEPER_JOB_POLL_INTERVAL": "2s",
    **test_overrides,
}

from jupyterhub.services import service as hub_service  # noqa: E402
from traitlets import default  # noqa: E402


class QuickRestartServiceSpawner(hub_service._ServiceSpawner):
    """Notices a managed service's exit within a second (the hub's default is 30 s)."""

    @default("poll_interval")
    def _poll_interval_default(self):
        return 1


# Tests that kill tokenkeeper wait for the hub to restart it.
hub_service._ServiceSpawner = QuickRestartServiceSpawner

# Tests change tokenkeeper's settings (keep, concurrency, ...) by writing this
# JSON file and restarting tokenkeeper; TOKENKEEPER_* variables take precedence.
settings = f"{state}/tokenkeeper-settings.json"
if not os.path.exists(settings):
    with open(settings, "w") as f:
        f.write("{}\n")
test_settings["TOKENKEEPER_CONFIG"] = settings

# --- README example begins ---
import os  # noqa: E402
import sys  # noqa: E402

import tokenkeeper_hub  # noqa: E402  (installed by make python-install)

issuer = f"http://127.0.0.1:{base + 80}/realms/jupyter"
hub_url = f"http://127.0.0.1:{base}{hub_base[:-1]}"

c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.client_id = "jupyterhub"
c.GenericOAuthenticator.client_secret = os.environ["OAUTH_CLIENT_SECRET"]
c.GenericOAuthenticator.oauth_callback_url = f"{hub_url}/hub/oauth_callback"
c.GenericOAuthenticator.authorize_url = f"{issuer}/protocol/openid-connect/auth"
c.GenericOAuthenticator.token_url = f"{issuer}/protocol/openid-connect/token"
c.GenericOAuthenticator.userdata_url = f"{issuer}/protocol/openid-connect/userinfo"
c.GenericOAuthenticator.username_claim = "preferred_username"
c.GenericOAuthenticator.scope = ["openid", "profile", "email"]
c.GenericOAuthenticator.allow_all = True
c.GenericOAuthenticator.logout_redirect_url = (
    f"{issuer}/protocol/openid-connect/logout"
    f"?client_id=jupyterhub&post_logout_redirect_uri={hub_url}/hub/"
)
c.Authenticator.auth_refresh_age = 5  # tests wait for a logged-out browser

# Land on the home page after login instead of spawning at once, so a user
# can be logged in without a running server.
c.JupyterHub.default_url = f"{hub_base}hub/home"

c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [f"{repo}/integration/stack/singleuser.sh"]

tokenkeeper_hub.configure(
    c,
    command=[env["TK_BIN"]],
    url=f"http://127.0.0.1:{base + 23}",
    **test_options,
    environment={
        "TOKENKEEPER_ISSUER_URL": issuer,
        "TOKENKEEPER_CLIENT_ID": "jupyterhub",
        "TOKENKEEPER_CLIENT_SECRET": os.environ["OAUTH_CLIENT_SECRET"],
        "TOKENKEEPER_STATE_KEY": os.environ["TOKENKEEPER_STATE_KEY"],
        "TOKENKEEPER_DATABASE": f"{state}/tokenkeeper.db",
        # The realm's Refresh Token Max Reuse (see Realm settings that matter).
        "TOKENKEEPER_REFRESH_TOKEN_MAX_REUSE": "1",
        "TOKENKEEPER_SERVICE_ACCOUNT_CLIENT_ID": "tokenkeeper-sa",
        "TOKENKEEPER_SERVICE_ACCOUNT_SECRET": os.environ["KEYCLOAK_SA_SECRET"],
        "TOKENKEEPER_ADMIN_CLIENT_ID": "tokenkeeper-admin",
        "TOKENKEEPER_ADMIN_CLIENT_SECRET": os.environ["KEYCLOAK_ADMIN_CLIENT_SECRET"],
        **test_settings,
    },
)
# --- README example ends ---

if env.get("TK_TEST_ADMIN_TOKEN"):
    # The tests' own service: administers users, lists services and holds
    # tokenkeeper's custom scopes.
    c.JupyterHub.services.append({"name": "tk-test-admin", "api_token": env["TK_TEST_ADMIN_TOKEN"]})
    c.JupyterHub.load_roles.append({
        "name": "tk-test-admin",
        "scopes": [
            "admin:users", "admin:servers", "tokens", "read:tokens", "list:users", "read:servers",
            "list:services",
            "access:services", tokenkeeper_hub.SCOPE_TOKENS, tokenkeeper_hub.SCOPE_SERVICE_ACCOUNT,
        ],
        "services": ["tk-test-admin"],
    })
    # mallory, a hub admin, may release tokenkeeper's guard (being an admin
    # is not enough).
    c.JupyterHub.load_roles.append({
        "name": "tk-test-guard",
        "scopes": [tokenkeeper_hub.SCOPE_GUARD, "access:services!service=tokenkeeper"],
        "users": ["mallory"],
    })
    # ada, a hub admin, sees every user's session on tokenkeeper's page, acts
    # for them and may release the guard there (being an admin is not enough).
    c.JupyterHub.load_roles.append(tokenkeeper_hub.page_admin_role(users=["ada"], release_guard=True))
