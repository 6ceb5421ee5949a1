"""Tests of the notebook client against fake tokenkeepers on loopback (standard library only besides pytest)."""

import os
import socket
import stat
import struct
import threading
import warnings

import pytest

import tokenkeeper
from fakes import NOW, TOKEN, FakeTime, free_port, jwt, listening_socket
from tokenkeeper.__main__ import main


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


def test_401_raises_login_required_saying_the_hub_refuses_the_servers_token(fakes):
    f = fakes(status=401, body={"error": "unauthorized", "message": "The JupyterHub token is invalid or expired."})
    with pytest.raises(tokenkeeper.LoginRequired) as err:
        tokenkeeper.get_token(url=f.url)
    assert str(err.value) == ("the hub refuses this server's JupyterHub token (HTTP 401: The JupyterHub token is "
                              "invalid or expired.): log in to JupyterHub again, or restart the server if that does "
                              "not help")
    assert err.value.status == 401


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


AUDIENCE_TOKEN = jwt(iat=NOW, exp=NOW + 300, aud="trino")


def echoing(query):
    """A tokenkeeper that serves audience and identity-provider tokens, naming them in its answer."""
    body = {"user": "alice", "access_token": AUDIENCE_TOKEN, "token_type": "Bearer", "expires_in": 300}
    for name in ("audience", "idp"):
        if name in query:
            body[name] = query[name][0]
    return 200, body


@pytest.mark.parametrize("kwargs, query", [
    ({"audience": "trino"}, {"min_valid": ["60"], "audience": ["trino"]}),
    ({"idp": "github"}, {"min_valid": ["60"], "idp": ["github"]}),
    ({"audience": "a b&c"}, {"min_valid": ["60"], "audience": ["a b&c"]}),
])
def test_audience_and_idp_are_asked_for(fakes, kwargs, query):
    f = fakes(answer=echoing)
    assert tokenkeeper.get_token(url=f.url, **kwargs) == AUDIENCE_TOKEN
    assert f.seen == [("/services/tokenkeeper/fresh-token", query, "token server-token")]


@pytest.mark.parametrize("kwargs, what", [
    ({"audience": "trino"}, "audience 'trino'"),
    ({"idp": "github"}, "identity provider 'github'"),
])
def test_an_answer_that_does_not_name_the_token_asked_for_is_refused(fakes, kwargs, what):
    # tokenkeeper versions without audience tokens ignore the parameter and
    # answer with the user's own token, which must not go to another service.
    f = fakes()
    with pytest.raises(tokenkeeper.TokenkeeperError) as err:
        tokenkeeper.get_token(url=f.url, **kwargs)
    assert f"tokenkeeper answered without the token for {what}: this tokenkeeper does not serve" in str(err.value)
    f = fakes(answer=lambda q: (200, {**echoing(q)[1], "audience": "other"}))
    with pytest.raises(tokenkeeper.TokenkeeperError, match="answered without the token for audience 'trino'"):
        tokenkeeper.get_token(url=f.url, audience="trino")


@pytest.mark.parametrize("kwargs, want", [
    ({"audience": "trino", "idp": "github"}, "not both"),
    ({"audience": ""}, "audience must be a non-empty string"),
    ({"idp": 7}, "idp must be a non-empty string"),
])
def test_a_bad_audience_or_idp_is_refused_before_asking(fakes, kwargs, want):
    f = fakes(answer=echoing)
    with pytest.raises(ValueError, match=want):
        tokenkeeper.get_token(url=f.url, **kwargs)
    assert f.seen == []


@pytest.mark.parametrize("kwargs, status, body, cls, want", [
    ({"audience": "minio"}, 403,
     {"error": "audience_not_allowed", "message": "tokenkeeper hands out no token for this audience."},
     tokenkeeper.NotAllowed,
     "HTTP 403: tokenkeeper hands out no token for this audience. (audience 'minio'; an admin allows it in "
     "tokenkeeper's audiences setting)"),
    ({"idp": "gitlab"}, 403,
     {"error": "identity_provider_not_allowed", "message": "tokenkeeper hands out no token of this identity provider."},
     tokenkeeper.NotAllowed, "(idp 'gitlab'; an admin allows it in tokenkeeper's identity_providers setting)"),
    ({"audience": "trino"}, 502,
     {"error": "exchange_refused", "message": 'Keycloak refused a token for audience "trino": access_denied: not allowed'},
     tokenkeeper.ExchangeRefused, 'HTTP 502: Keycloak refused a token for audience "trino": access_denied: not allowed'),
    ({"idp": "github"}, 502,
     {"error": "idp_token_refused", "message": 'Keycloak gave no token of identity provider "github" (HTTP 400): no token'},
     tokenkeeper.ExchangeRefused, 'identity provider "github" (HTTP 400): no token'),
    ({"audience": "trino"}, 409, {"error": "login_required", "message": "Log in to JupyterHub again."},
     tokenkeeper.LoginRequired, "Log in to JupyterHub again."),
])
def test_refusals_raise_their_own_errors(fakes, kwargs, status, body, cls, want):
    f = fakes(status=status, body=body)
    with pytest.raises(cls) as err:
        tokenkeeper.get_token(url=f.url, **kwargs)
    assert want in str(err.value)
    assert (err.value.status, err.value.code) == (status, body["error"])


def test_a_forbidden_answer_of_another_kind_is_not_a_refused_audience(fakes):
    f = fakes(status=403, body={"error": "forbidden", "message": "no access"})
    with pytest.raises(tokenkeeper.TokenkeeperError) as err:
        tokenkeeper.get_token(url=f.url, audience="trino")
    assert type(err.value) is tokenkeeper.TokenkeeperError
    assert str(err.value) == "HTTP 403: no access"


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
            started.append(fakes(sock=listening_socket(port)))

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


@pytest.mark.parametrize("argv, query", [
    (["--audience", "trino"], {"min_valid": ["60"], "audience": ["trino"]}),
    (["--idp", "github", "--min-valid", "1m"], {"min_valid": ["60"], "idp": ["github"]}),
])
def test_the_command_asks_for_an_audience_or_idp(fakes, capsys, argv, query):
    f = fakes(answer=echoing)
    assert main(["--url", f.url, *argv]) == 0
    assert capsys.readouterr().out == AUDIENCE_TOKEN + "\n"
    assert f.seen[0][1] == query


def test_the_command_says_why_an_audience_is_refused(fakes, capsys):
    f = fakes(status=403, body={"error": "audience_not_allowed", "message": "tokenkeeper hands out no token for this audience."})
    assert main(["--url", f.url, "--audience", "minio"]) == 1
    assert capsys.readouterr().err == ("tokenkeeper-token: HTTP 403: tokenkeeper hands out no token for this audience. "
                                       "(audience 'minio'; an admin allows it in tokenkeeper's audiences setting)\n")


@pytest.mark.parametrize("argv, want", [
    (["--audience", "a", "--idp", "b"], "not allowed with argument"),
    (["--audience", ""], "must not be empty"),
])
def test_the_command_refuses_bad_arguments(capsys, argv, want):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert want in capsys.readouterr().err


def test_the_command_says_why_it_cannot_write_the_file(fakes, tmp_path, capsys):
    f = fakes()
    assert main(["--url", f.url, "--file", str(tmp_path / "missing" / "token")]) == 1
    assert "No such file or directory" in capsys.readouterr().err


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

    code = ("import sys, tokenkeeper, tokenkeeper.__main__, tokenkeeper.tokenfiles, tokenkeeper.serverextension; "
            "std = set(sys.stdlib_module_names); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] not in std and m.split('.')[0] not in ('tokenkeeper', '__main__')); "
            "print(bad)")
    if not hasattr(sys, "stdlib_module_names"):
        pytest.skip("sys.stdlib_module_names needs Python 3.10")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    assert out.stdout.strip() == "[]"


def test_busy_429_is_retried(fakes):
    # tokenkeeper refuses new tokens at once when callers with made-up ones
    # fill its lookup queue, and asks to retry shortly.
    answers = iter([(429, {"error": "busy", "message": "try again in a second"})] * 2)

    def answer(query):
        return next(answers, (200, {"user": "alice", "access_token": TOKEN, "expires_in": 600}))

    f = fakes(answer=answer)
    t = FakeTime()
    assert tokenkeeper.get_token(url=f.url, sleep=t.sleep, clock=t.clock) == TOKEN
    assert t.sleeps == [0.5, 1]
    assert len(f.seen) == 3
