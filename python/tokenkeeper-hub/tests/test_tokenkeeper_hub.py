"""Tests of tokenkeeper_hub: the pre-spawn hook, the refresh_user_hook, roles and configure().

Run with a JupyterHub environment that has the package installed
(``make pytest`` runs them with both test stacks' virtualenvs).
"""

import asyncio
import base64
import json
import logging
from types import SimpleNamespace
from urllib.parse import parse_qs

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets.config import Config

import tokenkeeper_hub as tk
from tokenkeeper_hub.roles import _default_scopes as default_scopes
from tokenkeeper_hub.roles import _has_extra_user_scopes, configured_entries

HAS_EXTRA_USER_SCOPES = _has_extra_user_scopes()

NOW = 1_800_000_000
ACCESS = "eyJ.access.token"


def jwt(**claims):
    """Return an unsigned JWT with claims (the hook never checks signatures)."""
    def seg(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{seg({'alg': 'HS512', 'typ': 'JWT'})}.{seg(claims)}.c2ln"


# --- the pre-spawn hook against a fake tokenkeeper on loopback ---------------


class FakeTokenkeeper(web.RequestHandler):
    """Answers every request with the configured status and body, and records it."""

    def initialize(self, seen, status, body):
        self.seen, self.status, self.body = seen, status, body

    def get(self):
        self.seen.append(SimpleNamespace(
            method=self.request.method, path=self.request.path, query=self.request.query,
            authorization=self.request.headers.get("Authorization"),
            spawn_secret=self.request.headers.get(tk.SPAWN_SECRET_HEADER),
        ))
        self.set_status(self.status)
        self.finish(json.dumps(self.body))


async def run_hook(status=200, body=None, api_token="server-token-of-alice", prefix="/services/tokenkeeper/",
                   make=None, **options):
    """Serve a fake tokenkeeper, run a hook made by ``make`` (default
    make_pre_spawn_hook) for a spawner, and return (spawner, requests seen,
    exception raised, the fake's port)."""
    seen = []
    body = {"user": "alice", "access_token": ACCESS} if body is None else body
    app = web.Application([(r".*", FakeTokenkeeper, {"seen": seen, "status": status, "body": body})])
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    hook = make(port) if make else tk.make_pre_spawn_hook(f"http://127.0.0.1:{port}{prefix}", **options)
    shared = {"SHARED": "1"}
    spawner = SimpleNamespace(api_token=api_token, user=SimpleNamespace(name="alice"),
                              environment=shared, log=logging.getLogger("test"))
    err = None
    try:
        await hook(spawner)
    except Exception as e:
        err = e
    finally:
        server.stop()
    assert shared == {"SHARED": "1"}, "the hook changed the configured (shared) environment dict"
    return spawner, seen, err, port


def test_hook_asks_with_the_spawners_own_token_and_names_no_user():
    spawner, seen, err, port = asyncio.run(run_hook())
    assert err is None
    assert len(seen) == 1
    req = seen[0]
    assert (req.method, req.path) == ("GET", "/services/tokenkeeper/fresh-token")
    assert parse_qs(req.query) == {"min_valid": ["300"]}
    assert req.authorization == "token server-token-of-alice"
    assert spawner.environment == {
        "SHARED": "1",
        "KEYCLOAK_ACCESS_TOKEN": ACCESS,
        "TOKENKEEPER_URL": f"http://127.0.0.1:{port}/services/tokenkeeper/",
    }


def test_hook_sets_the_configured_names():
    spawner, _, err, _ = asyncio.run(run_hook(env_name="MY_TOKEN", notebook_url="https://hub.example.org/services/tokenkeeper/"))
    assert err is None
    assert spawner.environment["MY_TOKEN"] == ACCESS
    assert spawner.environment["TOKENKEEPER_URL"] == "https://hub.example.org/services/tokenkeeper/"


LOGIN_AGAIN = {"error": "login_required", "message": "The user has no valid Keycloak session: log in to JupyterHub again."}


@pytest.mark.parametrize("status, body, want_status, want_message", [
    (409, LOGIN_AGAIN, 403, LOGIN_AGAIN["message"]),
    (503, {"error": "unavailable", "message": "Keycloak cannot issue a fresh token right now; try again shortly."},
     503, "Keycloak cannot issue a fresh token right now; try again shortly."),
    (403, {"error": "forbidden", "message": "This token has no access to tokenkeeper."},
     503, "This token has no access to tokenkeeper."),
    (502, "not an object", 503, "HTTP 502"),
])
def test_hook_failure_stops_the_spawn_with_tokenkeepers_message(status, body, want_status, want_message):
    spawner, _, err, _ = asyncio.run(run_hook(status=status, body=body))
    assert isinstance(err, web.HTTPError)
    assert err.status_code == want_status
    assert err.log_message == f"No fresh Keycloak token: {want_message}"
    assert "KEYCLOAK_ACCESS_TOKEN" not in spawner.environment


def test_hook_without_a_spawner_token_fails_without_asking():
    _, seen, err, _ = asyncio.run(run_hook(api_token=""))
    assert seen == []
    assert isinstance(err, web.HTTPError) and err.status_code == 503
    assert "no API token" in err.log_message


def test_hook_not_required_starts_the_server_without_a_token():
    spawner, seen, err, _ = asyncio.run(run_hook(status=409, body=LOGIN_AGAIN, required=False))
    assert err is None
    assert len(seen) == 1
    assert spawner.environment == {"SHARED": "1"}


# --- refresh_user_hook --------------------------------------------------------


def user(admin=False):
    return SimpleNamespace(name="alice", admin=admin)


def hook(refresh_admins=False):
    return tk.make_refresh_user_hook(refresh_admins, now=lambda: NOW)


@pytest.mark.parametrize("state", [None, {}, {"access_token": ACCESS}, {"access_token": ACCESS, "refresh_token": ""}])
def test_no_refresh_token_means_log_in_again(state):
    assert hook()(None, user(), state) is False


@pytest.mark.parametrize("name, state, want", [
    ("valid refresh token", {"refresh_token": jwt(exp=NOW + 60)}, True),
    ("expired refresh token", {"refresh_token": jwt(exp=NOW - tk.CLOCK_LEEWAY - 1)}, False),
    ("expired within the clock leeway", {"refresh_token": jwt(exp=NOW - tk.CLOCK_LEEWAY + 1)}, True),
    ("long expired", {"refresh_token": jwt(exp=NOW - 86400, iat=NOW - 90000)}, False),
    ("opaque refresh token", {"refresh_token": "opaque-refresh-token"}, True),
    ("three parts, not base64 JSON", {"refresh_token": "a.b!.c"}, True),
    ("JWT without exp (offline token)", {"refresh_token": jwt(typ="Offline")}, True),
    ("JWT with exp 0", {"refresh_token": jwt(exp=0)}, True),
    ("JWT with a string exp", {"refresh_token": jwt(exp="soon")}, True),
    ("opaque, refresh_expires_in passed", {
        "refresh_token": "opaque",
        "token_response": {"access_token": jwt(iat=NOW - 400), "refresh_expires_in": 300}}, False),
    ("opaque, refresh_expires_in left", {
        "refresh_token": "opaque",
        "token_response": {"access_token": jwt(iat=NOW - 100), "refresh_expires_in": 300}}, True),
    ("opaque, refresh_expires_in 0 (offline)", {
        "refresh_token": "opaque",
        "token_response": {"access_token": jwt(iat=NOW - 400), "refresh_expires_in": 0}}, True),
    ("opaque, refresh_expires_in, top-level access token", {
        "refresh_token": "opaque", "access_token": jwt(iat=NOW - 400),
        "token_response": {"refresh_expires_in": 300}}, False),
    ("opaque, refresh_expires_in without iat", {
        "refresh_token": "opaque",
        "token_response": {"access_token": "opaque", "refresh_expires_in": 300}}, True),
    ("the refresh token's exp wins over refresh_expires_in", {
        "refresh_token": jwt(exp=NOW + 60),
        "token_response": {"access_token": jwt(iat=NOW - 400), "refresh_expires_in": 300}}, True),
])
def test_refresh_token_expiry(name, state, want):
    state = {"access_token": ACCESS, **state}
    assert hook()(None, user(), state) is want, name


@pytest.mark.parametrize("state", [
    None, {}, {"refresh_token": jwt(exp=NOW + 60)}, {"refresh_token": jwt(exp=NOW - 3600)},
])
def test_admins_are_left_to_oauthenticator(state):
    assert hook()(None, user(admin=True), state) is None
    assert tk.refresh_user_hook(None, user(admin=True), state) is None


def test_with_refresh_admins_admins_are_treated_like_everyone():
    h = hook(refresh_admins=True)
    assert h(None, user(admin=True), {}) is False
    assert h(None, user(admin=True), {"refresh_token": jwt(exp=NOW - 3600)}) is False
    assert h(None, user(admin=True), {"refresh_token": jwt(exp=NOW + 60)}) is True


def test_default_hook_uses_the_real_clock():
    assert tk.refresh_user_hook(None, user(), {"refresh_token": jwt(exp=1_000_000_000)}) is False  # 2001
    assert tk.refresh_user_hook(None, user(), {"refresh_token": jwt(exp=4_000_000_000)}) is True


# --- roles and configure() ------------------------------------------------------


def test_service_role_holds_no_token_scopes_by_default():
    (role,) = tk.service_roles()
    assert role["scopes"] == ["admin:users", "read:servers"]
    assert role["services"] == ["tokenkeeper"]


def test_service_role_options():
    (role,) = tk.service_roles("tk", revoke_tokens=True, stop_servers=True)
    assert role["scopes"] == ["admin:users", "read:servers", "read:tokens", "tokens", "delete:servers"]
    assert role["services"] == ["tk"]


def configured(**options):
    """Run configure() on a fresh config the way jupyterhub_config.py does and
    return the resulting settings as plain values."""
    c = Config()
    tk.configure(c, command=["/usr/local/bin/tokenkeeper"], url="http://127.0.0.1:10101",
                 environment={"TOKENKEEPER_ISSUER_URL": "https://kc.example.org/realms/r"}, **options)
    return SimpleNamespace(
        c=c,
        services=c.JupyterHub.services.get_value([]),
        roles=c.JupyterHub.load_roles.get_value([]),
        extra_user_scopes=c.JupyterHub.extra_user_scopes.get_value(set()),
        custom_scopes=c.JupyterHub.custom_scopes.get_value({}),
    )


def all_granted_scopes(roles):
    return {s for r in roles for s in r["scopes"]}


def test_configure_by_default_grants_no_one_other_users_tokens():
    got = configured()
    (service,) = got.services
    assert service["name"] == "tokenkeeper"
    assert "api_token" not in service
    assert "admin" not in service
    secret = service["environment"].get(tk.SPAWN_SECRET_ENV, "")
    assert len(secret) >= 32, "a managed service gets a spawn secret made at hub start"
    assert service["environment"] == {
        "TOKENKEEPER_ISSUER_URL": "https://kc.example.org/realms/r",
        "TOKENKEEPER_REVOKE_TOKENS": "false",
        "TOKENKEEPER_STOP_SERVERS": "false",
        "TOKENKEEPER_REFRESH_ADMINS": "false",
        tk.SPAWN_SECRET_ENV: secret,
    }
    granted = all_granted_scopes(got.roles)
    for scope in (tk.SCOPE_TOKENS, "tokens", "read:tokens", "admin:servers", "servers"):
        assert scope not in granted, scope
    assert tk.SCOPE_TOKENS in got.custom_scopes, "the scope stays defined for admins who grant it on purpose"
    access = "access:services!service=tokenkeeper"
    server = next(r for r in got.roles if r["name"] == "server")
    assert server["scopes"] == [*default_scopes("server"), access], "the server role keeps its defaults"
    if HAS_EXTRA_USER_SCOPES:
        assert [r["name"] for r in got.roles] == ["tokenkeeper-service", "server"]
        assert got.extra_user_scopes == {access}
    else:
        assert [r["name"] for r in got.roles] == ["tokenkeeper-service", "server", "user"]
        assert got.roles[2]["scopes"] == [*default_scopes("user"), access]


def test_configure_installs_the_hooks():
    got = configured()
    assert got.c.OAuthenticator.enable_auth_state is True
    assert got.c.OAuthenticator.refresh_user_hook(None, user(admin=True), {}) is None

    def make(port):
        return configured_at(port).c.Spawner.pre_spawn_hook

    spawner, seen, err, _ = asyncio.run(run_hook(make=make))
    assert err is None
    assert [(r.path, parse_qs(r.query), r.authorization) for r in seen] == [
        ("/services/tokenkeeper/fresh-token", {"min_valid": ["300"], "user": ["alice"]}, "token server-token-of-alice")]
    assert len(seen[0].spawn_secret or "") >= 32, "the hook sends the spawn secret configure() made"
    assert spawner.environment["KEYCLOAK_ACCESS_TOKEN"] == ACCESS


def configured_at(port):
    c = Config()
    tk.configure(c, command=["tokenkeeper"], url=f"http://127.0.0.1:{port}")
    return SimpleNamespace(c=c)


def test_configure_revoke_tokens_grants_and_says_so():
    got = configured(revoke_tokens=True)
    assert {"read:tokens", "tokens"} <= set(got.roles[0]["scopes"])
    assert got.services[0]["environment"]["TOKENKEEPER_REVOKE_TOKENS"] == "true"


def test_configure_refresh_admins_makes_the_service_admin():
    got = configured(refresh_admins=True)
    assert got.services[0]["admin"] is True
    assert got.services[0]["environment"]["TOKENKEEPER_REFRESH_ADMINS"] == "true"
    assert got.c.OAuthenticator.refresh_user_hook(None, user(admin=True), {}) is False


@pytest.mark.parametrize("env, options", [
    ({"TOKENKEEPER_REVOKE_TOKENS": "true"}, {}),
    ({"TOKENKEEPER_STOP_SERVERS": "1"}, {}),
    ({"TOKENKEEPER_REFRESH_ADMINS": "false"}, {"refresh_admins": True}),
    ({"TOKENKEEPER_REVOKE_TOKENS": "yes"}, {"revoke_tokens": True}),
])
def test_configure_refuses_a_contradicting_environment(env, options):
    with pytest.raises(ValueError, match=next(iter(env))):
        tk.configure(Config(), command=["tokenkeeper"], url="http://127.0.0.1:1", environment=env, **options)


def test_configure_accepts_an_agreeing_environment():
    c = Config()
    tk.configure(c, command=["tokenkeeper"], url="http://127.0.0.1:1",
                 environment={"TOKENKEEPER_REVOKE_TOKENS": "True"}, revoke_tokens=True)
    assert c.JupyterHub.services.get_value([])[0]["environment"]["TOKENKEEPER_REVOKE_TOKENS"] == "true"


def test_configured_server_token_scopes_get_the_access_scope():
    c = Config()
    c.Spawner.server_token_scopes = ["users:activity!user"]
    tk.configure(c, command=["tokenkeeper"], url="http://127.0.0.1:1")
    assert c.Spawner.server_token_scopes == ["users:activity!user", "access:services!service=tokenkeeper"]


def test_callable_server_token_scopes_get_the_access_scope():
    async def scopes(spawner):
        return ["users:activity!user"] if spawner.user.admin else []

    c = Config()
    c.Spawner.server_token_scopes = scopes
    tk.configure(c, command=["tokenkeeper"], url="http://127.0.0.1:1")
    got = c.Spawner.server_token_scopes
    admin, other = SimpleNamespace(user=user(admin=True)), SimpleNamespace(user=user())
    assert asyncio.run(got(admin)) == ["users:activity!user", "access:services!service=tokenkeeper"]
    assert asyncio.run(got(other)) == [], "empty means the server role, which has the scope"


# --- base URLs: the hook and servers ask under c.JupyterHub.base_url ------------


@pytest.mark.parametrize("settings, prefix", [
    ({}, "/services/tokenkeeper/"),
    ({"base_url": "/"}, "/services/tokenkeeper/"),
    ({"base_url": "/jhub/"}, "/jhub/services/tokenkeeper/"),
    ({"base_url": "/jhub"}, "/jhub/services/tokenkeeper/"),  # JupyterHub adds the slash; so does configure
    # bind_url's path sets the base URL too.
    ({"bind_url": "http://127.0.0.1:8000/jhub/"}, "/jhub/services/tokenkeeper/"),
    ({"bind_url": "http://127.0.0.1:8000"}, "/services/tokenkeeper/"),
    ({"bind_url": "http://127.0.0.1:8000/", "base_url": "/jhub/"}, "/jhub/services/tokenkeeper/"),
])
def test_configure_follows_the_hubs_base_url(settings, prefix):
    def make(port):
        c = Config()
        for k, v in settings.items():
            c.JupyterHub[k] = v
        tk.configure(c, command=["tokenkeeper"], url=f"http://127.0.0.1:{port}")
        assert tk.service_prefix(c) == prefix
        return c.Spawner.pre_spawn_hook

    spawner, seen, err, port = asyncio.run(run_hook(make=make))
    assert err is None
    assert [r.path for r in seen] == [f"{prefix}fresh-token"], "the hook must ask under the hub's base URL"
    assert spawner.environment["TOKENKEEPER_URL"] == f"http://127.0.0.1:{port}{prefix}"


@pytest.mark.parametrize("base_url, notebook_url, want", [
    ("/", "http://hub:10101", "http://hub:10101/services/tokenkeeper/"),
    ("/jhub/", "http://hub:10101", "http://hub:10101/jhub/services/tokenkeeper/"),
    ("/jhub/", "http://hub:10101/", "http://hub:10101/jhub/services/tokenkeeper/"),
    # A URL with a path is the admin's own route: used as given.
    ("/jhub/", "https://tk.example.org/tokens/", "https://tk.example.org/tokens/"),
])
def test_configure_sidecar_urls_follow_the_base_url(base_url, notebook_url, want):
    c = Config()
    c.JupyterHub.base_url = base_url
    tk.configure(c, url="http://hub:10101", api_token="t" * 32, hook_url="http://127.0.0.1:10101",
                 notebook_url=notebook_url)
    hook = c.Spawner.pre_spawn_hook
    assert hook.service_url == f"http://127.0.0.1:10101{tk.service_prefix(c)}"
    assert hook.notebook_url == want
    (service,) = configured_entries(c.JupyterHub.services)
    assert service["url"] == "http://hub:10101", "the proxy keeps the request's path"


def test_chained_hook_keeps_the_urls():
    c = Config()
    c.JupyterHub.base_url = "/jhub/"
    c.Spawner.pre_spawn_hook = lambda spawner: None
    tk.configure(c, command=["tokenkeeper"], url="http://127.0.0.1:10101")
    assert c.Spawner.pre_spawn_hook.service_url == "http://127.0.0.1:10101/jhub/services/tokenkeeper/"


def sidecar_container(base=None, probe_path="/services/tokenkeeper/", **env):
    """Return a sidecar container spec like Zero to JupyterHub's hub.extraContainers entry."""
    variables = {"JUPYTERHUB_SERVICE_NAME": "tokenkeeper", **env}
    if base is not None:
        variables["JUPYTERHUB_BASE_URL"] = base
    probe = {"httpGet": {"path": probe_path, "port": "tokenkeeper"}}
    return {"name": "tokenkeeper", "env": [{"name": k, "value": v} for k, v in variables.items()],
            "startupProbe": probe, "livenessProbe": probe}


@pytest.mark.parametrize("hub_base, container", [
    ("/", sidecar_container()),
    ("/", sidecar_container("/")),
    ("/jhub/", sidecar_container("/jhub/", "/jhub/services/tokenkeeper/")),
    ("/jhub/", sidecar_container(None, "/jhub/services/tokenkeeper/",
                                 JUPYTERHUB_SERVICE_PREFIX="/jhub/services/tokenkeeper/",
                                 JUPYTERHUB_API_URL="http://127.0.0.1:8081/jhub/hub/api")),
])
def test_configure_accepts_a_sidecar_that_agrees_with_the_base_url(hub_base, container):
    c = Config()
    c.JupyterHub.base_url = hub_base
    tk.configure(c, url="http://hub:10101", api_token="t" * 32, sidecar=[{"name": "other"}, container])


@pytest.mark.parametrize("hub_base, container, want", [
    # Only hub.baseUrl changed: the sidecar, its API URL and its probes all say so.
    ("/jhub/", sidecar_container("/"), ["serves under '/services/tokenkeeper/'", "set its JUPYTERHUB_BASE_URL to '/jhub/'",
                                        "hub's API at 'http://127.0.0.1:8081/hub/api'",
                                        "startupProbe asks '/services/tokenkeeper/'", "livenessProbe"]),
    # The variable changed, the probes forgotten.
    ("/jhub/", sidecar_container("/jhub/"), ["startupProbe asks '/services/tokenkeeper/'"]),
    ("/", sidecar_container("/jhub/", "/jhub/services/tokenkeeper/"), ["set its JUPYTERHUB_BASE_URL to '/'"]),
    ("/jhub/", sidecar_container("/jhub/", "/jhub/services/tokenkeeper/",
                                 JUPYTERHUB_API_URL="http://127.0.0.1:8081/hub/api"), ["hub's API"]),
    ("/", [{"name": "other"}], ["no sidecar container runs service 'tokenkeeper'"]),
])
def test_configure_refuses_a_sidecar_that_disagrees_with_the_base_url(hub_base, container, want):
    c = Config()
    c.JupyterHub.base_url = hub_base
    with pytest.raises(ValueError) as e:
        tk.configure(c, url="http://hub:10101", api_token="t" * 32, sidecar=container)
    for w in want:
        assert w in str(e.value)
