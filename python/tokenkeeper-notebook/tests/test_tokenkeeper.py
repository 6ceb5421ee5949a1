"""Tests of the notebook client against fake tokenkeepers on loopback (standard library only besides pytest)."""

import base64
import http.server
import json
import os
import socket
import stat
import struct
import threading
import warnings
from urllib.parse import parse_qs, urlsplit

import pytest

import tokenkeeper
from tokenkeeper.__main__ import main

NOW = 1_800_000_000


def jwt(**claims):
    def seg(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{seg({'alg': 'RS256'})}.{seg(claims)}.c2ln"


TOKEN = jwt(iat=NOW, exp=NOW + 600)


class Fake:
    """A fake tokenkeeper: answers every GET with status, body and headers; records requests."""

    def __init__(self, status=200, body=None, headers=None, sock=None):
        self.status, self.headers, self.seen = status, headers or {}, []
        self.body = {"user": "alice", "access_token": TOKEN, "expires_in": 600} if body is None else body
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                u = urlsplit(self.path)
                fake.seen.append((u.path, parse_qs(u.query), self.headers.get("Authorization")))
                data = json.dumps(fake.body).encode()
                self.send_response(fake.status)
                for k, v in fake.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=sock is None)
        if sock is not None:
            self.server.socket.close()
            self.server.socket = sock
        self.port = self.server.server_address[1] if sock is None else sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/services/tokenkeeper/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fakes():
    started = []
    yield lambda **kw: started.append(Fake(**kw)) or started[-1]
    for f in started:
        f.close()


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.delenv("TOKENKEEPER_URL", raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")


class FakeTime:
    """A clock that moves only when the client sleeps; on_sleep runs at each sleep."""

    def __init__(self, on_sleep=None):
        self.now, self.sleeps, self.on_sleep = 0.0, [], on_sleep

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_get_token_asks_with_the_servers_token(fakes, monkeypatch):
    f = fakes()
    monkeypatch.setenv("TOKENKEEPER_URL", f.url)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tokenkeeper.get_token(min_valid=120) == TOKEN
    assert f.seen == [("/services/tokenkeeper/fresh-token", {"min_valid": ["120"]}, "token server-token")]


def test_without_the_environment_it_says_what_is_missing():
    with pytest.raises(tokenkeeper.TokenkeeperError, match="TOKENKEEPER_URL and JUPYTERHUB_API_TOKEN"):
        tokenkeeper.get_token()


def test_409_raises_login_required(fakes):
    f = fakes(status=409, body={"error": "login_required", "message": "Log in to JupyterHub again."})
    with pytest.raises(tokenkeeper.LoginRequired, match="^Log in to JupyterHub again.$"):
        tokenkeeper.get_token(url=f.url)


@pytest.mark.parametrize("status, body, want", [
    (503, {"error": "unavailable", "message": "Keycloak cannot issue a fresh token right now."},
     "HTTP 503: Keycloak cannot issue a fresh token right now."),
    (403, {"error": "forbidden", "message": "no access"}, "HTTP 403: no access"),
    (502, "not an object", "HTTP 502: Bad Gateway"),
    (200, {"user": "alice"}, "carries no access token"),
])
def test_other_errors_carry_tokenkeepers_message(fakes, status, body, want):
    f = fakes(status=status, body=body)
    with pytest.raises(tokenkeeper.TokenkeeperError) as err:
        tokenkeeper.get_token(url=f.url)
    assert not isinstance(err.value, tokenkeeper.LoginRequired)
    assert want in str(err.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(fakes, status):
    elsewhere = fakes()
    f = fakes(status=status, body={}, headers={"Location": f"http://127.0.0.1:{elsewhere.port}/steal"})
    with pytest.raises(tokenkeeper.TokenkeeperError) as err:
        tokenkeeper.get_token(url=f.url)
    assert elsewhere.seen == [], "the server's token went to the redirect's target"
    assert len(f.seen) == 1
    assert f"HTTP {status} redirecting to http://127.0.0.1:{elsewhere.port}/steal; not followed" in str(err.value)


def test_connection_refused_is_retried_until_tokenkeeper_is_back(fakes):
    port = free_port()
    started = []

    def on_sleep(n):
        if n == 3:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            started.append(fakes(sock=sock))

    t = FakeTime(on_sleep)
    token = tokenkeeper.get_token(url=f"http://127.0.0.1:{port}/services/tokenkeeper/", sleep=t.sleep, clock=t.clock)
    assert token == TOKEN
    assert t.sleeps == [0.5, 1, 2]
    assert len(started[0].seen) == 1


def test_a_reset_connection_is_retried(fakes):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    served = []

    def reset_first_then_serve():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST
        served.append(fakes(sock=listener))

    th = threading.Thread(target=reset_first_then_serve)
    th.start()
    t = FakeTime(lambda n: th.join())
    token = tokenkeeper.get_token(url=f"http://127.0.0.1:{port}/", sleep=t.sleep, clock=t.clock)
    assert token == TOKEN
    assert t.sleeps == [0.5]
    assert len(served[0].seen) == 1


def test_refused_for_the_whole_retry_time_raises_unreachable():
    t = FakeTime()
    url = f"http://127.0.0.1:{free_port()}/services/tokenkeeper"
    with pytest.raises(tokenkeeper.TokenkeeperUnreachable) as err:
        tokenkeeper.get_token(url=url, sleep=t.sleep, clock=t.clock)
    assert f"tokenkeeper at {url} refused or dropped every connection for 45 s" in str(err.value)
    assert "Connection refused" in str(err.value)
    assert tokenkeeper.RETRY_FOR - 5 < sum(t.sleeps) <= tokenkeeper.RETRY_FOR
    assert max(t.sleeps) == 5


def test_a_timeout_is_not_retried():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts (backlog), never answers
    t = FakeTime()
    with pytest.raises(tokenkeeper.TokenkeeperError) as err:
        tokenkeeper.get_token(url=f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.3,
                              sleep=t.sleep, clock=t.clock)
    listener.close()
    assert not isinstance(err.value, tokenkeeper.TokenkeeperUnreachable)
    assert "timed out" in str(err.value)
    assert t.sleeps == []


@pytest.mark.parametrize("body, min_valid, want", [
    ({"access_token": jwt(iat=NOW, exp=NOW + 30), "expires_in": 29}, 60,
     "the token has 29 s left, less than the 60 s asked for: the realm's access tokens live 30 s"),
    ({"access_token": jwt(iat=NOW, exp=NOW + 300), "expires_in": 200}, 300, "ask for at most 150 s"),
    ({"access_token": jwt(iat=NOW, exp=NOW + 3600), "expires_in": 50}, 60,
     "tokenkeeper could not refresh it (is Keycloak reachable?)"),
])
def test_a_token_shorter_than_asked_for_comes_with_a_warning(fakes, body, min_valid, want):
    f = fakes(body=body)
    with pytest.warns(tokenkeeper.ShortTokenWarning) as caught:
        assert tokenkeeper.get_token(min_valid=min_valid, url=f.url) == body["access_token"]
    (w,) = caught
    assert want in str(w.message)


def test_a_token_that_meets_min_valid_comes_without_a_warning(fakes):
    f = fakes(body={"access_token": jwt(iat=NOW, exp=NOW + 30), "expires_in": 29})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenkeeper.get_token(min_valid=20, url=f.url)


# --- the console script ---------------------------------------------------------------


def test_the_command_prints_the_token(fakes, monkeypatch, capsys):
    f = fakes()
    monkeypatch.setenv("TOKENKEEPER_URL", f.url)
    assert main(["--min-valid", "2m"]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (TOKEN + "\n", "")
    assert f.seen[0][1] == {"min_valid": ["120"]}


def test_the_command_writes_a_private_file(fakes, tmp_path, capsys):
    f = fakes()
    path = tmp_path / "token"
    assert main(["--url", f.url, "--file", str(path)]) == 0
    assert path.read_text() == TOKEN + "\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert capsys.readouterr().out == ""
    assert os.listdir(tmp_path) == ["token"]


def test_the_command_fails_with_the_reason(fakes, capsys):
    f = fakes(status=409, body={"error": "login_required", "message": "Log in to JupyterHub again."})
    assert main(["--url", f.url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "tokenkeeper-token: Log in to JupyterHub again.\n"


def test_the_command_warns_of_a_short_token(fakes, capsys):
    f = fakes(body={"access_token": jwt(iat=NOW, exp=NOW + 30), "expires_in": 29})
    assert main(["--url", f.url, "--min-valid", "60"]) == 0
    out, err = capsys.readouterr()
    assert out == jwt(iat=NOW, exp=NOW + 30) + "\n"
    assert err.startswith("tokenkeeper-token: warning: the token has 29 s left")


@pytest.mark.parametrize("text, want", [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600)])
def test_durations(text, want):
    from tokenkeeper.__main__ import seconds
    assert seconds(text) == want


def test_a_bad_duration_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--min-valid", "soon"])
    assert exit_.value.code == 2
    assert "'soon': want whole seconds" in capsys.readouterr().err


def test_the_package_imports_nothing_outside_the_standard_library():
    import subprocess
    import sys

    code = ("import sys, tokenkeeper, tokenkeeper.__main__; "
            "std = set(sys.stdlib_module_names); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] not in std and m.split('.')[0] not in ('tokenkeeper', '__main__')); "
            "print(bad)")
    if not hasattr(sys, "stdlib_module_names"):
        pytest.skip("sys.stdlib_module_names needs Python 3.10")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    assert out.stdout.strip() == "[]"
