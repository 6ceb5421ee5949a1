"""configure() chains an admin's pre_spawn_hook, refresh_user_hook and post_auth_hook, and extends roles."""

import asyncio
import logging
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets.config import Config

import tokenkeeper_hub as tk
from tokenkeeper_hub import hooks
from tokenkeeper_hub.roles import _default_scopes as default_scopes
from tokenkeeper_hub.roles import _has_extra_user_scopes

ACCESS = "access:services!service=tokenkeeper"


def configure(c, **options):
    tk.configure(c, command=["tokenkeeper"], url="http://127.0.0.1:1", **options)
    return c


def spawner():
    return SimpleNamespace(api_token="t", user=SimpleNamespace(name="alice", admin=False),
                           environment={}, log=logging.getLogger("test"))


@pytest.fixture
def our_spawn_hook(monkeypatch):
    """Replace tokenkeeper's pre-spawn hook with one that records its calls."""
    calls = []

    def make(*args, **kwargs):
        async def ours(spawner):
            calls.append(("tokenkeeper", dict(spawner.environment)))
            spawner.environment = {**spawner.environment, "KEYCLOAK_ACCESS_TOKEN": "at"}
        return ours

    monkeypatch.setattr(tk, "make_pre_spawn_hook", make)
    return calls


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_existing_pre_spawn_hook_runs_first_then_tokenkeepers(our_spawn_hook, kind):
    def theirs_sync(spawner):
        our_spawn_hook.append(("admin", None))
        spawner.environment = {"ADMIN": "1"}  # replaces the dict: the token must still arrive

    async def theirs_async(spawner):
        theirs_sync(spawner)

    c = Config()
    c.Spawner.pre_spawn_hook = theirs_sync if kind == "sync" else theirs_async
    configure(c)
    s = spawner()
    asyncio.run(c.Spawner.pre_spawn_hook(s))
    assert our_spawn_hook == [("admin", None), ("tokenkeeper", {"ADMIN": "1"})]
    assert s.environment == {"ADMIN": "1", "KEYCLOAK_ACCESS_TOKEN": "at"}


def test_a_hook_on_a_spawner_subclass_section_is_chained_too(our_spawn_hook):
    """c.KubeSpawner.pre_spawn_hook wins over c.Spawner's for a KubeSpawner: it must carry ours."""
    def theirs(spawner):
        our_spawn_hook.append(("admin", None))

    c = Config()
    c.KubeSpawner.pre_spawn_hook = theirs
    configure(c)
    asyncio.run(c.KubeSpawner.pre_spawn_hook(spawner()))
    assert [who for who, _ in our_spawn_hook] == ["admin", "tokenkeeper"]
    our_spawn_hook.clear()
    asyncio.run(c.Spawner.pre_spawn_hook(spawner()))
    assert [who for who, _ in our_spawn_hook] == ["tokenkeeper"]


def test_a_refused_spawn_costs_tokenkeeper_nothing(our_spawn_hook):
    def theirs(spawner):
        raise web.HTTPError(403, "not today")

    c = Config()
    c.Spawner.pre_spawn_hook = theirs
    configure(c)
    with pytest.raises(web.HTTPError, match="not today"):
        asyncio.run(c.Spawner.pre_spawn_hook(spawner()))
    assert our_spawn_hook == []


def test_without_an_existing_hook_tokenkeepers_is_set_alone(our_spawn_hook):
    c = configure(Config())
    assert [k for k in c.keys() if "pre_spawn_hook" in c[k]] == ["Spawner"]


# --- refresh_user_hook --------------------------------------------------------------

MODEL = {"name": "alice", "auth_state": {"refresh_token": "r"}}


@pytest.mark.parametrize("theirs, ours, want", [
    (False, True, False),    # the admin's hook sends the user to log in: that stands
    (True, False, False),    # tokenkeeper's says the session ended: that stands
    (None, False, False),
    (None, True, True),      # no opinion from the admin: tokenkeeper's answer
    (None, None, None),      # neither: OAuthenticator refreshes (hub admins)
    (True, None, True),      # the admin's answer stands
    (True, True, True),
    (MODEL, True, MODEL),    # an auth model from the admin's hook is kept
])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_refresh_user_hooks_combine(theirs, ours, want, kind):
    seen = []

    def their_hook(authenticator, user, auth_state):
        seen.append("admin")
        return theirs

    async def their_async_hook(authenticator, user, auth_state):
        return their_hook(authenticator, user, auth_state)

    def our_hook(authenticator, user, auth_state):
        seen.append("tokenkeeper")
        return ours

    chained = tk.chain_refresh_user_hooks(their_hook if kind == "sync" else their_async_hook, our_hook)
    assert asyncio.run(chained(None, SimpleNamespace(name="alice"), {})) == want
    assert seen == (["admin"] if theirs is False else ["admin", "tokenkeeper"])


def test_configure_chains_a_refresh_user_hook_on_the_authenticator_class_section():
    def theirs(authenticator, user, auth_state):
        return False if user.name == "blocked" else None

    c = Config()
    c.GenericOAuthenticator.refresh_user_hook = theirs
    configure(c)
    hook = c.GenericOAuthenticator.refresh_user_hook
    expired = {"refresh_token": "opaque", "token_response": {"refresh_expires_in": 1,
                                                               "access_token": "x"}}
    assert asyncio.run(hook(None, SimpleNamespace(name="blocked", admin=False), {"refresh_token": "r"})) is False
    assert asyncio.run(hook(None, SimpleNamespace(name="bob", admin=False), {"refresh_token": "r"})) is True
    assert asyncio.run(hook(None, SimpleNamespace(name="bob", admin=False), {})) is False
    assert asyncio.run(hook(None, SimpleNamespace(name="bob", admin=True), expired)) is None
    assert c.OAuthenticator.refresh_user_hook is not hook, "the base section gets tokenkeeper's alone"


# --- post_auth_hook ------------------------------------------------------------------


def test_post_auth_hook_refuses_a_login_without_a_refresh_token():
    hook = tk.make_post_auth_hook()
    with pytest.raises(web.HTTPError) as err:
        hook(None, None, {"name": "alice", "auth_state": {"access_token": "a", "refresh_token": None}})
    assert err.value.status_code == 403
    assert "no refresh token" in err.value.log_message
    ok = {"name": "alice", "auth_state": {"access_token": "a", "refresh_token": "r"}}
    assert hook(None, None, ok) is ok
    no_state = {"name": "alice"}
    assert hook(None, None, no_state) is no_state


def test_an_existing_post_auth_hook_runs_first_and_its_result_is_checked():
    def theirs(authenticator, handler, authentication):
        return {**authentication, "groups": ["x"]}

    c = Config()
    c.Authenticator.post_auth_hook = theirs
    configure(c)
    hook = c.Authenticator.post_auth_hook
    got = asyncio.run(hook(None, None, {"name": "alice", "auth_state": {"refresh_token": "r"}}))
    assert got == {"name": "alice", "auth_state": {"refresh_token": "r"}, "groups": ["x"]}
    with pytest.raises(web.HTTPError):
        asyncio.run(hook(None, None, {"name": "alice", "auth_state": {}}))


# --- roles --------------------------------------------------------------------------------


def roles(c):
    return {r["name"]: r for r in tk.configured_entries(c.JupyterHub.load_roles)}


@pytest.mark.parametrize("assign", ["list", "append"])
def test_an_existing_server_role_is_extended_not_redefined(assign):
    theirs = ["users:activity!user", "access:servers!server", "read:users:name!user"]
    mine = {"name": "server", "scopes": list(theirs)}
    c = Config()
    if assign == "list":
        c.JupyterHub.load_roles = [mine]
    else:
        c.JupyterHub.load_roles.append(mine)
    configure(c)
    got = roles(c)
    assert got["server"]["scopes"] == [*theirs, ACCESS]
    assert [r["name"] for r in tk.configured_entries(c.JupyterHub.load_roles)].count("server") == 1


def test_an_existing_user_role_is_extended_on_every_version():
    c = Config()
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "read:groups"]}]
    configure(c)
    assert roles(c)["user"]["scopes"] == ["self", "read:groups", ACCESS]


def test_a_role_defined_without_scopes_keeps_the_defaults(monkeypatch):
    monkeypatch.setattr("tokenkeeper_hub.roles._has_extra_user_scopes", lambda: False)
    c = Config()
    c.JupyterHub.load_roles = [{"name": "server", "services": []}, {"name": "user", "groups": ["g"]}]
    configure(c)
    got = roles(c)
    assert got["server"]["scopes"] == [*default_scopes("server"), ACCESS]
    assert got["user"] == {"name": "user", "groups": ["g"], "scopes": [*default_scopes("user"), ACCESS]}


@pytest.mark.parametrize("has_extra", [True, False], ids=["jupyterhub6", "jupyterhub5"])
def test_the_user_role_without_a_definition(monkeypatch, has_extra):
    monkeypatch.setattr("tokenkeeper_hub.roles._has_extra_user_scopes", lambda: has_extra)
    c = configure(Config())
    if has_extra:
        assert "user" not in roles(c)
        assert c.JupyterHub.extra_user_scopes.to_dict()["update"] == {ACCESS}
    else:
        assert roles(c)["user"]["scopes"] == [*default_scopes("user"), ACCESS]
        assert "extra_user_scopes" not in c.JupyterHub, "JupyterHub 5 would warn about an unknown option"


def test_this_jupyterhub_is_detected():
    import jupyterhub

    assert _has_extra_user_scopes() == (jupyterhub.version_info[0] >= 6)


# --- a service that runs outside the hub (sidecar) ------------------------------------------


# PAGE is what configure() adds to the entry for tokenkeeper's page (see test_page.py).
PAGE = {"display": True, "oauth_no_confirm": True, "oauth_client_allowed_scopes": [tk.SCOPE_SESSIONS, tk.SCOPE_GUARD]}


def test_an_existing_service_entry_is_completed_not_duplicated():
    c = Config()
    c.JupyterHub.services = [{"name": "tokenkeeper", "api_token": "from-the-chart"}]
    tk.configure(c, url="http://hub:10101", hook_url="http://127.0.0.1:10101",
                 notebook_url="http://proxy-public/services/tokenkeeper/")
    assert c.JupyterHub.services == [{"name": "tokenkeeper", "api_token": "from-the-chart",
                                      "url": "http://hub:10101", **PAGE}]


def test_an_external_service_needs_a_token():
    with pytest.raises(ValueError, match="api_token"):
        tk.configure(Config(), url="http://hub:10101")
    c = Config()
    tk.configure(c, url="http://hub:10101", api_token="t0k3n-from-somewhere")
    assert c.JupyterHub.services.to_dict()["extend"] == [
        {"name": "tokenkeeper", "url": "http://hub:10101", "api_token": "t0k3n-from-somewhere", **PAGE}]


def test_an_external_service_takes_no_environment():
    with pytest.raises(ValueError, match="managed service"):
        tk.configure(Config(), url="http://hub:10101", api_token="t", environment={"TOKENKEEPER_X": "1"})


def test_a_service_entry_with_another_url_is_refused():
    c = Config()
    c.JupyterHub.services = [{"name": "tokenkeeper", "api_token": "t", "url": "http://elsewhere:1"}]
    with pytest.raises(ValueError, match="elsewhere"):
        tk.configure(c, url="http://hub:10101")


def test_the_hook_asks_at_hook_url(monkeypatch):
    made = {}
    monkeypatch.setattr(tk, "make_pre_spawn_hook", lambda url, **kw: made.update(url=url, **kw))
    tk.configure(Config(), url="http://hub:10101", api_token="t", hook_url="http://127.0.0.1:10101/",
                 notebook_url="http://proxy-public/services/tokenkeeper/", spawn_min_valid=120)
    assert made["url"] == "http://127.0.0.1:10101/services/tokenkeeper/"
    assert made["notebook_url"] == "http://proxy-public/services/tokenkeeper/"
    assert made["min_valid"] == 120


def test_hooks_module_is_what_the_package_exports():
    assert tk.make_refresh_user_hook is hooks.make_refresh_user_hook
