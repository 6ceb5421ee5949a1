"""The pre-spawn hook's error paths: restarts, redirects, 409, and tokens shorter than asked for."""

import asyncio
import base64
import json
import logging
import socket
import struct
from types import SimpleNamespace

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import tokenkeeper_hub as tk

NOW = 1_800_000_000


def jwt(**claims):
    def seg(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{seg({'alg': 'RS256'})}.{seg(claims)}.c2ln"


class Recorder(web.RequestHandler):
    """Answers with a fixed status, body and headers; records each request's Authorization."""

    def initialize(self, seen, status, body, headers):
        self.seen, self.status, self.body, self.headers = seen, status, body, headers

    def get(self):
        self.seen.append(self.request.headers.get("Authorization"))
        self.set_status(self.status)
        for k, v in self.headers.items():
            self.set_header(k, v)
        self.finish(json.dumps(self.body))


def serve(status=200, body=None, headers=None, sock=None):
    """Start a fake on loopback (on sock if given); return (server, port, requests seen)."""
    seen = []
    body = {"access_token": jwt(iat=NOW, exp=NOW + 600), "expires_in": 600} if body is None else body
    app = web.Application([(r".*", Recorder, {"seen": seen, "status": status, "body": body, "headers": headers or {}})])
    sockets = [sock] if sock else bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1], seen


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Log:
    def __init__(self):
        self.warnings = []

    def warning(self, msg, *args):
        self.warnings.append(msg % args)


def new_spawner():
    return SimpleNamespace(api_token="server-token", user=SimpleNamespace(name="alice"), environment={}, log=Log())


class FakeTime:
    """A clock that moves only when the hook sleeps; on_sleep runs at each sleep."""

    def __init__(self, on_sleep=None):
        self.now, self.sleeps, self.on_sleep = 0.0, [], on_sleep

    def clock(self):
        return self.now

    async def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


async def run(hook, spawner):
    try:
        await hook(spawner)
    except Exception as e:
        return e
    return None


def test_connection_refused_is_retried_until_tokenkeeper_is_back():
    async def main():
        port = free_port()
        started = []

        def on_sleep(n):
            if n == 3:  # tokenkeeper comes back after the third wait
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen()
                sock.setblocking(False)
                started.append(serve(sock=sock))

        t = FakeTime(on_sleep)
        hook = tk.make_pre_spawn_hook(f"http://127.0.0.1:{port}/services/tokenkeeper/", sleep=t.sleep, clock=t.clock)
        spawner = new_spawner()
        err = await run(hook, spawner)
        for server, _, _ in started:
            server.stop()
        return err, spawner, t.sleeps, started

    err, spawner, sleeps, started = asyncio.run(main())
    assert err is None
    assert sleeps == [0.5, 1, 2], "backoff doubles"
    assert started[0][2] == ["token server-token"]
    assert "KEYCLOAK_ACCESS_TOKEN" in spawner.environment


def test_a_reset_connection_is_retried():
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        loop = asyncio.get_running_loop()

        async def reset_first_then_serve():
            conn, _ = await loop.sock_accept(listener)
            await loop.sock_recv(conn, 65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST
            return serve(sock=listener)

        task = asyncio.ensure_future(reset_first_then_serve())
        t = FakeTime()
        hook = tk.make_pre_spawn_hook(f"http://127.0.0.1:{port}/", sleep=t.sleep, clock=t.clock)
        spawner = new_spawner()
        err = await run(hook, spawner)
        server, _, seen = await task
        server.stop()
        return err, spawner, t.sleeps, seen

    err, spawner, sleeps, seen = asyncio.run(main())
    assert err is None
    assert sleeps == [0.5]
    assert seen == ["token server-token"]
    assert "KEYCLOAK_ACCESS_TOKEN" in spawner.environment


def test_refused_for_the_whole_retry_time_fails_the_spawn_clearly():
    t = FakeTime()
    port = free_port()
    hook = tk.make_pre_spawn_hook(f"http://127.0.0.1:{port}/services/tokenkeeper/", sleep=t.sleep, clock=t.clock)
    spawner = new_spawner()
    err = asyncio.run(run(hook, spawner))
    assert isinstance(err, web.HTTPError) and err.status_code == 503
    assert f"tokenkeeper at http://127.0.0.1:{port}/services/tokenkeeper/ refused or dropped every connection for 45 s" in err.log_message
    assert "restarting" in err.log_message
    assert sum(t.sleeps) <= tk.RETRY_FOR
    assert sum(t.sleeps) > tk.RETRY_FOR - 5, "it kept trying for (nearly) the whole time"
    assert max(t.sleeps) == 5, "backoff is capped"
    assert "KEYCLOAK_ACCESS_TOKEN" not in spawner.environment


def test_a_timeout_is_not_retried():
    """Only refused and reset connections mean a restart; a hung tokenkeeper fails at once."""
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts (backlog), never answers
        t = FakeTime()
        hook = tk.make_pre_spawn_hook(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.5,
                                      sleep=t.sleep, clock=t.clock)
        err = await run(hook, new_spawner())
        listener.close()
        return err, t.sleeps

    err, sleeps = asyncio.run(main())
    assert isinstance(err, web.HTTPError) and err.status_code == 503
    assert sleeps == []


def test_a_redirect_is_not_followed():
    async def main():
        elsewhere, other_port, other_seen = serve()
        server, port, seen = serve(status=307, body={}, headers={"Location": f"http://127.0.0.1:{other_port}/steal"})
        hook = tk.make_pre_spawn_hook(f"http://127.0.0.1:{port}/services/tokenkeeper/")
        spawner = new_spawner()
        err = await run(hook, spawner)
        server.stop()
        elsewhere.stop()
        return err, spawner, seen, other_seen, other_port

    err, spawner, seen, other_seen, other_port = asyncio.run(main())
    assert seen == ["token server-token"]
    assert other_seen == [], "the server's token went to the redirect's target"
    assert isinstance(err, web.HTTPError) and err.status_code == 503
    assert f"HTTP 307 redirecting to http://127.0.0.1:{other_port}/steal; not followed" in err.log_message
    assert "KEYCLOAK_ACCESS_TOKEN" not in spawner.environment


def test_409_asks_the_user_to_log_in_again():
    async def main():
        server, port, _ = serve(status=409, body={"error": "login_required", "message": "Log in again."})
        err = await run(tk.make_pre_spawn_hook(f"http://127.0.0.1:{port}/"), new_spawner())
        server.stop()
        return err

    err = asyncio.run(main())
    assert isinstance(err, web.HTTPError) and err.status_code == 403
    assert err.log_message == "No fresh Keycloak token: Log in again."


def test_an_answer_without_a_token_fails_the_spawn():
    async def main():
        server, port, _ = serve(body={"user": "alice"})
        err = await run(tk.make_pre_spawn_hook(f"http://127.0.0.1:{port}/"), new_spawner())
        server.stop()
        return err

    err = asyncio.run(main())
    assert isinstance(err, web.HTTPError) and err.status_code == 503
    assert "no access token" in err.log_message


@pytest.mark.parametrize("body, min_valid, want", [
    ({"access_token": jwt(iat=NOW, exp=NOW + 30), "expires_in": 29}, 300,
     "it has 29 s left, less than the 300 s asked for: the realm's access tokens live 30 s"),
    ({"access_token": jwt(iat=NOW, exp=NOW + 300), "expires_in": 200}, 300,
     "ask for at most 150 s"),
    ({"access_token": jwt(iat=NOW, exp=NOW + 3600), "expires_in": 100}, 300,
     "tokenkeeper could not refresh it (is Keycloak reachable?)"),
    ({"access_token": "opaque", "expires_in": 100}, 300, "tokenkeeper could not refresh it"),
    ({"access_token": jwt(iat=NOW, exp=NOW + 3600), "expires_in": 3000}, 300, None),
    ({"access_token": jwt(iat=NOW, exp=NOW + 3600)}, 300, None),
])
def test_a_token_shorter_than_asked_for_is_said_so(body, min_valid, want):
    async def main():
        server, port, _ = serve(body=body)
        spawner = new_spawner()
        err = await run(tk.make_pre_spawn_hook(f"http://127.0.0.1:{port}/", min_valid=min_valid), spawner)
        server.stop()
        return err, spawner

    err, spawner = asyncio.run(main())
    assert err is None
    assert spawner.environment["KEYCLOAK_ACCESS_TOKEN"] == body["access_token"], "the token is still used"
    if want is None:
        assert spawner.log.warnings == []
    else:
        (warning,) = spawner.log.warnings
        assert warning.startswith("tokenkeeper: the token for alice: ")
        assert want in warning


def test_the_hook_uses_the_simple_client_even_when_the_hub_configured_curl(monkeypatch):
    """z2jh configures tornado's curl client globally; the hook's errors must stay the ones it knows."""
    from tornado.httpclient import AsyncHTTPClient

    monkeypatch.setattr(AsyncHTTPClient, "configured_class", classmethod(lambda cls: pytest.fail("configured client used")))
    t = FakeTime()
    hook = tk.make_pre_spawn_hook(f"http://127.0.0.1:{free_port()}/", sleep=t.sleep, clock=t.clock, retry_for=1)
    err = asyncio.run(run(hook, new_spawner()))
    assert isinstance(err, web.HTTPError) and "refused or dropped" in err.log_message


logging.getLogger("tornado.access").setLevel(logging.ERROR)


class Busy(web.RequestHandler):
    """Answers 429 (tokenkeeper's lookup queue is full) twice, then a token."""

    def initialize(self, seen):
        self.seen = seen

    def get(self):
        self.seen.append(self.request.headers.get("Authorization"))
        if len(self.seen) <= 2:
            self.set_status(429)
            self.set_header("Retry-After", "1")
            self.finish(json.dumps({"error": "busy", "message": "try again in a second"}))
            return
        self.finish(json.dumps({"access_token": jwt(iat=NOW, exp=NOW + 600), "expires_in": 600}))


def test_busy_429_is_retried():
    async def main():
        seen = []
        server = HTTPServer(web.Application([(r".*", Busy, {"seen": seen})]))
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        t = FakeTime()
        hook = tk.make_pre_spawn_hook(f"http://127.0.0.1:{sockets[0].getsockname()[1]}/", sleep=t.sleep, clock=t.clock)
        spawner = new_spawner()
        err = await run(hook, spawner)
        server.stop()
        return err, spawner, t.sleeps, seen

    err, spawner, sleeps, seen = asyncio.run(main())
    assert err is None
    assert sleeps == [0.5, 1]
    assert len(seen) == 3
    assert "KEYCLOAK_ACCESS_TOKEN" in spawner.environment
