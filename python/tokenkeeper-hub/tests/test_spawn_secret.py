"""The spawn secret: made or taken by configure(), given to the managed service and the hook, sent on the wire."""

import asyncio
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

SECRET = "given-spawn-secret-0123456789-abcdefghij"


@pytest.fixture(autouse=True)
def no_hub_secret(monkeypatch):
    """The hub's environment holds no spawn secret unless a test sets one."""
    monkeypatch.delenv(tk.SPAWN_SECRET_ENV, raising=False)


class Recorder(web.RequestHandler):
    """Answers 200 with a token, or a redirect; records each request's URL and headers."""

    def initialize(self, seen, status, headers):
        self.seen, self.status, self.headers = seen, status, headers

    def get(self):
        self.seen.append(SimpleNamespace(
            path=self.request.path, query=parse_qs(self.request.query),
            authorization=self.request.headers.get("Authorization"),
            secret=self.request.headers.get(tk.SPAWN_SECRET_HEADER),
        ))
        self.set_status(self.status)
        for k, v in self.headers.items():
            self.set_header(k, v)
        self.finish(json.dumps({"user": "alice", "access_token": "kc-access", "expires_in": 600}))


def serve(status=200, headers=None):
    seen = []
    app = web.Application([(r".*", Recorder, {"seen": seen, "status": status, "headers": headers or {}})])
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1], seen


def spawner():
    return SimpleNamespace(api_token="server-token", user=SimpleNamespace(name="alice"), environment={},
                           log=logging.getLogger("test"))


def configure(port=1, **options):
    """Run configure() for a managed service at port; return (service entry, pre-spawn hook)."""
    c = Config()
    tk.configure(c, url=f"http://127.0.0.1:{port}", **{"command": ["tokenkeeper"], **options})
    (service,) = c.JupyterHub.services.get_value([])
    return service, c.Spawner.pre_spawn_hook


async def spawn_through(make):
    """Serve a fake tokenkeeper, run the hook make(port) returns, return (spawner, requests, error)."""
    server, port, seen = serve()
    sp, err = spawner(), None
    try:
        await make(port)(sp)
    except Exception as e:
        err = e
    finally:
        server.stop()
    return sp, seen, err


def test_configure_makes_a_new_secret_at_each_hub_start_and_gives_it_to_the_service_and_hook():
    first, _ = configure()
    second, _ = configure()
    a, b = first["environment"][tk.SPAWN_SECRET_ENV], second["environment"][tk.SPAWN_SECRET_ENV]
    assert len(a) >= 43 and len(b) >= 43
    assert a != b, "each hub start makes its own secret"

    services = []

    def make(port):
        service, hook = configure(port)
        services.append(service)
        return hook

    sp, seen, err = asyncio.run(spawn_through(make))
    assert err is None
    (req,) = seen
    assert req.secret == services[0]["environment"][tk.SPAWN_SECRET_ENV], "the hook sends the service's secret"
    assert req.query == {"min_valid": ["300"], "user": ["alice"]}
    assert req.authorization == "token server-token"
    assert sp.environment["KEYCLOAK_ACCESS_TOKEN"] == "kc-access"


@pytest.mark.parametrize("how", ["argument", "hub environment", "service environment"])
def test_configure_respects_a_given_secret(monkeypatch, how):
    options = {}
    if how == "argument":
        options["spawn_secret"] = SECRET
    elif how == "hub environment":
        monkeypatch.setenv(tk.SPAWN_SECRET_ENV, SECRET)
    else:
        options["environment"] = {tk.SPAWN_SECRET_ENV: SECRET}

    def make(port):
        service, hook = configure(port, **options)
        assert service["environment"][tk.SPAWN_SECRET_ENV] == SECRET
        return hook

    _, seen, err = asyncio.run(spawn_through(make))
    assert err is None
    assert [r.secret for r in seen] == [SECRET]


def test_a_sidecar_gets_the_hubs_secret_and_none_made_up(monkeypatch):
    def sidecar(port):
        c = Config()
        tk.configure(c, url=f"http://127.0.0.1:{port}", api_token="hub-token-of-the-sidecar")
        (service,) = c.JupyterHub.services.get_value([])
        assert "environment" not in service
        return c.Spawner.pre_spawn_hook

    _, seen, err = asyncio.run(spawn_through(sidecar))
    assert err is None
    (req,) = seen
    assert (req.secret, req.query, req.authorization) == (None, {"min_valid": ["300"]}, "token server-token"), \
        "without a secret the hook asks with the server's token alone, as before"

    monkeypatch.setenv(tk.SPAWN_SECRET_ENV, SECRET)
    _, seen, err = asyncio.run(spawn_through(sidecar))
    assert err is None
    assert [(r.secret, r.query) for r in seen] == [(SECRET, {"min_valid": ["300"], "user": ["alice"]})]


@pytest.mark.parametrize("options, match", [
    ({"spawn_secret": "short"}, "at least 32"),
    ({"spawn_secret": SECRET, "environment": {tk.SPAWN_SECRET_ENV: SECRET + "-other"}}, "differs"),
])
def test_configure_refuses_a_bad_secret(options, match):
    with pytest.raises(ValueError, match=match):
        configure(**options)


def test_the_secret_does_not_follow_a_redirect():
    async def main():
        elsewhere, other_port, other_seen = serve()
        server, port, seen = serve(status=307, headers={"Location": f"http://127.0.0.1:{other_port}/steal"})
        hook = tk.make_pre_spawn_hook(f"http://127.0.0.1:{port}/services/tokenkeeper/", spawn_secret=SECRET)
        sp = spawner()
        err = None
        try:
            await hook(sp)
        except Exception as e:
            err = e
        server.stop()
        elsewhere.stop()
        return err, sp, seen, other_seen

    err, sp, seen, other_seen = asyncio.run(main())
    assert [r.secret for r in seen] == [SECRET]
    assert other_seen == [], "the spawn secret went to the redirect's target"
    assert isinstance(err, web.HTTPError) and err.status_code == 503
    assert "not followed" in err.log_message
    assert "KEYCLOAK_ACCESS_TOKEN" not in sp.environment
