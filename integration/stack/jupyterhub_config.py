"""JupyterHub configuration for tokenkeeper's demo and integration tests.

Everything listens on 127.0.0.1. Ports come from TK_PORT_BASE (B): the hub's
public URL B, the proxy API B+1, the hub API B+81, Keycloak B+80 and
tokenkeeper B+23. The stack (integration/stack.go) sets the TK_* variables.
"""
import os
import sys

env = os.environ
base = int(env["TK_PORT_BASE"])
repo = env["TK_REPO"]
state = env["TK_STATE_DIR"]
cache = env["TK_CACHE"]
issuer = f"http://127.0.0.1:{base + 80}/realms/jupyter"

c.JupyterHub.bind_url = f"http://127.0.0.1:{base}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{base + 81}"
c.JupyterHub.db_url = f"sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{state}/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{base + 1}"
c.ConfigurableHTTPProxy.command = [f"{cache}/node/node_modules/.bin/configurable-http-proxy"]
c.ConfigurableHTTPProxy.pid_file = f"{state}/proxy.pid"

c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.client_id = "jupyterhub"
c.GenericOAuthenticator.client_secret = env["TK_CLIENT_SECRET"]
c.GenericOAuthenticator.oauth_callback_url = f"http://127.0.0.1:{base}/hub/oauth_callback"
c.GenericOAuthenticator.authorize_url = f"{issuer}/protocol/openid-connect/auth"
c.GenericOAuthenticator.token_url = f"{issuer}/protocol/openid-connect/token"
c.GenericOAuthenticator.userdata_url = f"{issuer}/protocol/openid-connect/userinfo"
c.GenericOAuthenticator.logout_redirect_url = (
    f"{issuer}/protocol/openid-connect/logout?client_id=jupyterhub"
    f"&post_logout_redirect_uri=http://127.0.0.1:{base}/hub/"
)
c.GenericOAuthenticator.username_claim = "preferred_username"
c.GenericOAuthenticator.scope = ["openid", "profile", "email"]
c.GenericOAuthenticator.allow_all = True
c.Authenticator.auth_refresh_age = 5  # cheap with tokenkeeper's hook; bounds a logged-out browser
# Hub admins: tokenkeeper leaves them to OAuthenticator's own refresh unless
# TOKENKEEPER_REFRESH_ADMINS is true. mallory is for the admin tests; fay
# for the cross-user test.
c.Authenticator.admin_users = {"mallory", "fay"}

# Land on the home page after login instead of spawning at once, so a user
# can be logged in without a running server.
c.JupyterHub.default_url = "/hub/home"

c.JupyterHub.spawner_class = "simple"
c.Spawner.ip = "127.0.0.1"
c.Spawner.cmd = [f"{repo}/integration/stack/singleuser.sh"]
c.Spawner.environment = {"TK_STATE_DIR": state, "TK_VENV": f"{cache}/venv"}
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 90

sys.path.insert(0, f"{repo}/hub")
import tokenkeeper_hub  # noqa: E402


def flag(name):
    """Read a boolean TOKENKEEPER_* variable a test set; off when unset."""
    return env.get(name, "false").lower() in ("1", "t", "true")


# No test asserts that a logout revokes hub tokens, so the stack runs with
# the least privileges, as configure() defaults to. A test that needs one of
# these options sets the variable in the stack's environment.
tokenkeeper_hub.configure(
    c,
    command=[env["TK_BIN"]],
    url=f"http://127.0.0.1:{base + 23}",
    revoke_tokens=flag("TOKENKEEPER_REVOKE_TOKENS"),
    stop_servers=flag("TOKENKEEPER_STOP_SERVERS"),
    refresh_admins=flag("TOKENKEEPER_REFRESH_ADMINS"),
    environment={
        "TOKENKEEPER_ISSUER_URL": issuer,
        "TOKENKEEPER_CLIENT_ID": "jupyterhub",
        "TOKENKEEPER_CLIENT_SECRET": env["TK_CLIENT_SECRET"],
        "TOKENKEEPER_STATE_KEY": env["TK_STATE_KEY"],
        "TOKENKEEPER_DATABASE": f"{state}/tokenkeeper.db",
        "TOKENKEEPER_SWEEP_INTERVAL": env.get("TK_SWEEP_INTERVAL", "2s"),
        "TOKENKEEPER_REFRESH_WINDOW": "5s",
        "TOKENKEEPER_LOG_LEVEL": "debug",
        "TOKENKEEPER_SERVICE_ACCOUNT_CLIENT_ID": "tokenkeeper-sa",
        "TOKENKEEPER_SERVICE_ACCOUNT_SECRET": env["TK_SA_SECRET"],
        "TOKENKEEPER_SERVICE_TOKEN_AUDIENCES": "trino",
        "TOKENKEEPER_AUDIENCES": "trino",
        "TOKENKEEPER_IDENTITY_PROVIDERS": "external",
        "TOKENKEEPER_ADMIN_CLIENT_ID": "tokenkeeper-admin",
        "TOKENKEEPER_ADMIN_CLIENT_SECRET": env["TK_ADMIN_SECRET"],
        "TOKENKEEPER_JOB_API_URL": env.get("TK_JOB_API_URL", ""),
        "TOKENKEEPER_JOB_POLL_INTERVAL": "2s",
        **{k: v for k, v in env.items() if k.startswith("TOKENKEEPER_")},
    },
)

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
