"""Tests of the token files: the spec, the formats, atomic private writes, and the keeper's schedule.

The keeper talks to fake tokenkeepers on loopback; its wall clock is a fake
that the tests move, and the fake tokenkeeper issues tokens by the same clock.
"""

import json
import logging
import os
import shutil
import stat
import threading
import time

import pytest

import tokenkeeper
from fakes import FakeTime, free_port, jwt, listening_socket
from tokenkeeper import tokenfiles
from tokenkeeper.tokenfiles import Keeper, SpecError, TokenFile, parse_spec, render

T0 = 1_800_000_000
LIFE = 30  # the test realm's access tokens live 30 s


class Clock:
    """The wall clock of a test: the keeper schedules by it, the fake tokenkeeper issues tokens by it."""

    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


class Issuer:
    """A fake tokenkeeper's answers: a new token whenever the current one has less than min_valid left.

    Audience and identity-provider tokens are named in the answer, as
    tokenkeeper does. ``status`` and ``body`` override the answer for all
    requests, or per target with ``refuse[target] = (status, body)``.
    """

    def __init__(self, clock, life=LIFE):
        self.clock, self.life = clock, life
        self.tokens, self.issued = {}, 0
        self.refuse = {}

    def __call__(self, query):
        target = next((f"{k}={query[k][0]}" for k in ("audience", "idp") if k in query), "base")
        if target in self.refuse:
            return self.refuse[target]
        if "*" in self.refuse:
            return self.refuse["*"]
        now = self.clock()
        token = self.tokens.get(target)
        min_valid = min(int(query["min_valid"][0]), self.life // 2)
        if token is None or token[1] - now < min_valid:
            self.issued += 1
            iat = int(now)
            token = (jwt(iat=iat, exp=iat + self.life, n=self.issued, target=target), iat + self.life)
            self.tokens[target] = token
        body = {"user": "alice", "access_token": token[0], "token_type": "Bearer",
                "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token[1])),
                "expires_in": int(token[1] - now)}
        for k in ("audience", "idp"):
            if k in query:
                body[k] = query[k][0]
        return 200, body


LOGIN_REQUIRED = (409, {"error": "login_required",
                        "message": "The user has no valid Keycloak session: log in to JupyterHub again."})


def no_jitter():
    """The keeper's random draw when a test wants the whole backoff: nothing is left out."""
    return 0.0


@pytest.fixture
def keeper(fakes, clock, issuer, tmp_path, caplog):
    """Return make(files...) -> (keeper, fake): a keeper for files in tmp_path/tokens and its fake tokenkeeper."""
    caplog.set_level(logging.DEBUG, logger="tokenkeeper-test")

    def make(*files, **options):
        fake = fakes(answer=issuer)
        files = files or (TokenFile("base", str(tmp_path / "tokens" / "base")),)
        log = logging.getLogger("tokenkeeper-test")
        options.setdefault("random", no_jitter)
        return Keeper(files, fake.url, "server-token", now=clock, log=log, **options), fake

    return make


def content(path):
    with open(path) as f:
        return f.read()


def token_in(path):
    return content(path).strip()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def asked(fake):
    """The (target, min_valid) of each request the fake saw."""
    out = []
    for _, query, _ in fake.seen:
        target = next((f"{k}={query[k][0]}" for k in ("audience", "idp") if k in query), "base")
        out.append((target, int(query["min_valid"][0])))
    return out


# --- the spec -----------------------------------------------------------------------


def test_the_spec_gives_each_file_its_settings():
    files = parse_spec(json.dumps({
        "base": {"path": "/tmp/t/base"},
        "trino": {"path": "/tmp/t/trino", "format": "json", "audience": "trino"},
        "gh_1": {"path": "/tmp/t/gh", "format": "header", "idp": "github"},
    }))
    assert files == [
        TokenFile("base", "/tmp/t/base", "raw"),
        TokenFile("trino", "/tmp/t/trino", "json", audience="trino"),
        TokenFile("gh_1", "/tmp/t/gh", "header", idp="github"),
    ]
    assert [f.target for f in files] == [{}, {"audience": "trino"}, {"idp": "github"}]


@pytest.mark.parametrize("spec, want", [
    ("not json", "not JSON"),
    ("[]", "want a JSON object"),
    ({"Base": {"path": "/t/a"}}, "'Base': a name is a lower-case letter"),
    ({"base": "/t/a"}, "'base': settings must be a JSON object"),
    ({"base": {"path": "/t/a", "mode": "0644"}}, "'base': unknown setting 'mode'"),
    ({"base": {}}, "'base': path must be an absolute, normalised path or one that starts with ~/, not None"),
    ({"base": {"path": "tokens/base"}}, "not 'tokens/base'"),
    ({"base": {"path": "/tmp/t/../etc/x"}}, "not '/tmp/t/../etc/x'"),
    ({"base": {"path": "~/../x"}}, "not '~/../x'"),
    ({"base": {"path": "~bob/x"}}, "not '~bob/x'"),
    ({"base": {"path": "~/"}}, "not '~/'"),
    ({"base": {"path": "/t/a", "format": "yaml"}}, "format must be one of raw, json, header, not 'yaml'"),
    ({"base": {"path": "/t/a", "audience": ""}}, "audience must be a non-empty string"),
    ({"base": {"path": "/t/a", "audience": "a", "idp": "b"}}, "not both"),
    ({"a": {"path": "/t/a"}, "b": {"path": "/t/a"}}, "path '/t/a' is given to more than one file"),
])
def test_a_bad_spec_says_what_is_wrong(spec, want):
    with pytest.raises(SpecError) as err:
        parse_spec(spec if isinstance(spec, str) else json.dumps(spec))
    assert want in str(err.value)


def test_a_path_in_the_home_directory_is_the_server_users(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home") + "/")
    files = parse_spec(json.dumps({"base": {"path": "~/.tokenkeeper/tokens/base"}}))
    assert files == [TokenFile("base", str(tmp_path / "home" / ".tokenkeeper" / "tokens" / "base"))]


def test_a_path_in_the_home_directory_of_a_server_without_one_is_refused(monkeypatch):
    monkeypatch.setattr(tokenfiles.os.path, "expanduser", lambda path: path)
    with pytest.raises(SpecError, match="'base': path '~/t/base' is in the home directory, and this server has none"):
        parse_spec(json.dumps({"base": {"path": "~/t/base"}}))


def test_a_bad_spec_lists_every_problem():
    with pytest.raises(SpecError) as err:
        parse_spec(json.dumps({"A": {"path": "/t/a"}, "b": {"path": "x", "format": "yaml"}}))
    assert str(err.value).count(";") == 2


# --- formats ------------------------------------------------------------------------

ANSWER = {"user": "alice", "access_token": "eyJ.x.y", "token_type": "Bearer", "expires_at": "2027-01-15T08:00:30Z",
          "expires_in": 30}


@pytest.mark.parametrize("file_format, answer, want", [
    ("raw", ANSWER, "eyJ.x.y\n"),
    ("header", ANSWER, "Authorization: Bearer eyJ.x.y\n"),
    ("header", {**ANSWER, "token_type": "bearer"}, "Authorization: Bearer eyJ.x.y\n"),
    ("json", ANSWER, {"access_token": "eyJ.x.y", "token_type": "Bearer", "expires_at": "2027-01-15T08:00:30Z",
                      "user": "alice"}),
    ("json", {**ANSWER, "audience": "trino"}, {"access_token": "eyJ.x.y", "token_type": "Bearer",
                                               "expires_at": "2027-01-15T08:00:30Z", "user": "alice",
                                               "audience": "trino"}),
])
def test_formats(file_format, answer, want):
    got = render(file_format, answer)
    if isinstance(want, dict):
        assert got.endswith("}\n")
        got = json.loads(got)
    assert got == want


@pytest.mark.parametrize("file_format", ["raw", "json", "header"])
def test_the_keeper_writes_each_format(keeper, tmp_path, file_format):
    path = tmp_path / "tokens" / "t"
    k, fake = keeper(TokenFile("t", str(path), file_format))
    k.step()
    token = fake.answer({"min_valid": ["0"]})[1]["access_token"]
    want = {"raw": token + "\n", "header": f"Authorization: Bearer {token}\n"}.get(file_format)
    if want is None:
        got = json.loads(content(path))
        assert got["access_token"] == token and got["expires_at"] == "2027-01-15T08:00:30Z"
    else:
        assert content(path) == want


# --- writing ------------------------------------------------------------------------


def test_a_file_is_private_and_replaced_whole(keeper, tmp_path, clock):
    k, _ = keeper()
    path = tmp_path / "tokens" / "base"
    k.step()
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700, "the directory the keeper made is not private"
    first = token_in(path)
    with open(path) as reader:  # a reader that opened the file before the rewrite
        clock.now += 20
        k.step()
        assert reader.read().strip() == first, "the file was rewritten in place, not replaced"
    assert token_in(path) != first
    assert mode(path) == 0o600
    assert os.listdir(path.parent) == ["base"], "a temporary file was left behind"


def test_a_file_is_flushed_to_disk_then_renamed_from_the_same_directory(keeper, tmp_path, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename
    monkeypatch.setattr(tokenfiles.os, "fsync", lambda fd: events.append(("fsync", fd)) or real_fsync(fd))

    def rename(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
        st = os.stat(src, dir_fd=src_dir_fd, follow_symlinks=False)
        with open(os.open(src, os.O_RDONLY, dir_fd=src_dir_fd)) as f:
            events.append(("rename", src_dir_fd, dst_dir_fd, dst, stat.S_IMODE(st.st_mode), f.read()))
        real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(tokenfiles.os, "rename", rename)
    k, _ = keeper()
    k.step()
    path = tmp_path / "tokens" / "base"
    assert [e[0] for e in events] == ["fsync", "rename"]
    _, src_dir_fd, dst_dir_fd, dst, file_mode, text = events[1]
    assert src_dir_fd == dst_dir_fd and os.path.samestat(os.fstat(src_dir_fd), os.stat(path.parent))
    assert (dst, file_mode, text) == ("base", 0o600, content(path))


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tokenfiles.os, "fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        tokenfiles.write_atomically(str(tmp_path / "t"), "x\n")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("dir_mode", [0o770, 0o707, 0o1777])
def test_a_directory_others_may_write_to_is_refused(keeper, tmp_path, caplog, dir_mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, dir_mode)
    k, fake = keeper(TokenFile("base", str(shared / "base")))
    k.step()
    assert os.listdir(shared) == []
    assert (f"token directory {shared} is writable by group or others (mode {dir_mode:04o}): "
            "refusing to write tokens there") in caplog.text
    assert len(fake.seen) == 1


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_symlinked_directory_is_refused_and_nothing_is_written_through_it(keeper, tmp_path, caplog,
                                                                            target_exists):
    target = tmp_path / "theirs"
    if target_exists:
        target.mkdir(mode=0o700)
    (tmp_path / "tokens").symlink_to(target)
    k, _ = keeper()
    k.step()
    assert (os.listdir(target) == []) if target_exists else not target.exists()
    assert f"token directory {tmp_path / 'tokens'} is a symlink: refusing to write tokens there" in caplog.text
    assert [r.levelname for r in caplog.records if "refusing" in r.message] == ["ERROR"]


def test_a_directory_owned_by_another_user_is_refused(keeper, tmp_path, caplog, monkeypatch):
    uid = os.geteuid()
    monkeypatch.setattr(tokenfiles.os, "geteuid", lambda: uid + 1)  # the directory the keeper makes is uid's
    k, _ = keeper()
    k.step()
    monkeypatch.undo()
    assert os.listdir(tmp_path / "tokens") == []
    assert (f"token directory {tmp_path / 'tokens'} is owned by uid {uid}, not by this user (uid {uid + 1}): "
            "refusing to write tokens there") in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_directory_of_another_user_is_refused(keeper, tmp_path, caplog):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 4242, 4242)
    k, _ = keeper(TokenFile("base", str(theirs / "base")))
    k.step()
    assert os.listdir(theirs) == []
    assert f"token directory {theirs} is owned by uid 4242, not by this user" in caplog.text


def test_missing_parents_are_made_private_and_existing_ones_left_alone(keeper, tmp_path):
    os.chmod(tmp_path, 0o755)
    k, _ = keeper(TokenFile("base", str(tmp_path / "a" / "b" / "base")))
    k.step()
    assert token_in(tmp_path / "a" / "b" / "base")
    assert (mode(tmp_path), mode(tmp_path / "a"), mode(tmp_path / "a" / "b")) == (0o755, 0o700, 0o700)


def test_a_symlink_at_a_files_name_is_replaced_not_written_through(keeper, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    tokens = tmp_path / "tokens"
    tokens.mkdir(mode=0o700)
    (tokens / "base").symlink_to(victim)
    k, _ = keeper()
    k.step()
    assert content(victim) == "precious\n"
    assert not (tokens / "base").is_symlink() and stat.S_ISREG(os.lstat(tokens / "base").st_mode)
    assert token_in(tokens / "base").startswith("eyJ")
    (tokens / "base").unlink()
    (tokens / "base").symlink_to(victim)
    k.stop()  # removes the symlink, never its target
    assert os.listdir(tokens) == [] and content(victim) == "precious\n"


def test_a_temporary_file_is_made_exclusively_never_through_a_symlink(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    monkeypatch.setattr(tokenfiles.os, "urandom", lambda n: b"\0" * n)  # the name is known in advance
    (tmp_path / f".t.{'00' * 6}.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError, match="no unused temporary file name"):
        tokenfiles.write_atomically(str(tmp_path / "t"), "token\n")
    assert content(victim) == "precious\n"
    assert not (tmp_path / "t").exists()


def test_stop_removes_the_files_from_the_directory_it_wrote_to_only(keeper, tmp_path, clock, caplog):
    tokens, moved, decoy = tmp_path / "tokens", tmp_path / "moved", tmp_path / "decoy"
    k, _ = keeper()
    k.step()
    decoy.mkdir(mode=0o700)
    (decoy / "base").write_text("someone else's\n")
    tokens.rename(moved)
    tokens.symlink_to(decoy)  # the path now leads elsewhere
    clock.now += 20
    k.step()
    assert "is a symlink: refusing to write tokens there" in caplog.text
    assert content(decoy / "base") == "someone else's\n", "written through a symlinked directory"
    k.stop()
    assert content(decoy / "base") == "someone else's\n", "a file was removed through a symlinked directory"
    assert os.listdir(moved) == [], "the keeper's file was left in the directory it wrote to"


def test_a_directory_removed_meanwhile_is_made_again(keeper, tmp_path, clock):
    tokens = tmp_path / "tokens"
    k, _ = keeper()
    k.step()
    shutil.rmtree(tokens)
    clock.now += 20
    k.step()
    assert token_in(tokens / "base") and mode(tokens) == 0o700


def test_start_removes_nothing_through_a_symlinked_directory(fakes, tmp_path, caplog):
    fake = fakes(status=503, body={"error": "unavailable", "message": "Keycloak cannot issue a fresh token right now."})
    decoy = tmp_path / "decoy"
    decoy.mkdir(mode=0o700)
    (decoy / "base").write_text("someone else's\n")
    (tmp_path / "tokens").symlink_to(decoy)
    k = Keeper([TokenFile("base", str(tmp_path / "tokens" / "base"))], fake.url, "server-token")
    k.start()
    k.stop()
    assert content(decoy / "base") == "someone else's\n"
    assert "cannot remove" in caplog.text and "is a symlink" in caplog.text


# --- the schedule -------------------------------------------------------------------


def test_a_file_is_rewritten_at_two_thirds_of_its_tokens_life(keeper, tmp_path, clock):
    k, fake = keeper()
    path = tmp_path / "tokens" / "base"
    assert k.step() == pytest.approx(20)
    first = token_in(path)
    for _ in range(3):  # three lifetimes
        clock.now += 19.9
        k.step()
        assert token_in(path) == first, "rewritten before two thirds of the token's life"
        clock.now += 0.1
        assert k.step() == pytest.approx(20)
        assert token_in(path) != first, "not rewritten at two thirds of the token's life"
        first = token_in(path)
    # The first request asks for the default; later ones for half the lifetime,
    # which makes tokenkeeper refresh a token at two thirds of its life.
    assert asked(fake) == [("base", 60), ("base", 15), ("base", 15), ("base", 15)]


def test_a_long_token_past_two_thirds_is_asked_for_again_at_once(keeper, clock, issuer, tmp_path):
    issuer.life = 3600
    issuer.tokens["base"] = (jwt(iat=T0 - 3500, exp=T0 + 100), T0 + 100)  # tokenkeeper holds an old token
    k, fake = keeper()
    assert k.step() == 0  # 100 s left of 3600: ask again, now for half the lifetime
    assert k.step() == pytest.approx(2400)
    assert asked(fake) == [("base", 60), ("base", 1800)]
    assert token_in(tmp_path / "tokens" / "base") == issuer.tokens["base"][0]


def test_each_file_keeps_its_own_schedule(keeper, clock, issuer, tmp_path):
    files = (TokenFile("base", str(tmp_path / "t" / "base")),
             TokenFile("trino", str(tmp_path / "t" / "trino"), "json", audience="trino"))
    issuer.tokens["audience=trino"] = (jwt(iat=T0 - 10, exp=T0 + 20), T0 + 20)  # two thirds at T0 + 10
    k, fake = keeper(*files)
    assert k.step() == pytest.approx(10)
    clock.now += 10
    assert k.step() == pytest.approx(10)  # trino refreshed; base is due in 10 s
    clock.now += 10
    assert k.step() == pytest.approx(10)
    assert asked(fake) == [("base", 60), ("audience=trino", 60), ("audience=trino", 15), ("base", 15)]


# --- failures -----------------------------------------------------------------------


def test_connection_refused_is_retried_until_tokenkeeper_answers(fakes, clock, issuer, tmp_path):
    port = free_port()
    started = []

    def on_sleep(n):
        if n == 3:
            started.append(fakes(sock=listening_socket(port), answer=issuer))

    t = FakeTime(on_sleep)
    path = tmp_path / "base"
    k = Keeper([TokenFile("base", str(path))], f"http://127.0.0.1:{port}/", "server-token", now=clock,
               clock=t.clock, sleep=t.sleep)
    k.step()
    assert t.sleeps == [0.5, 1, 2]
    assert token_in(path) == issuer.tokens["base"][0]
    assert mode(path) == 0o600


def test_unreachable_for_the_whole_retry_time_is_tried_again_later(tmp_path, clock, caplog):
    t = FakeTime()
    k = Keeper([TokenFile("base", str(tmp_path / "base"))], f"http://127.0.0.1:{free_port()}/", "server-token",
               now=clock, clock=t.clock, sleep=t.sleep, random=no_jitter)
    assert k.step() == tokenfiles.RETRY_FIRST
    assert "refused or dropped every connection for 45 s" in caplog.text
    assert not (tmp_path / "base").exists()


def test_a_failure_keeps_the_file_until_its_token_expires(keeper, clock, issuer, tmp_path, caplog):
    k, _ = keeper()
    path = tmp_path / "tokens" / "base"
    k.step()
    token = token_in(path)
    issuer.refuse["*"] = (503, {"error": "unavailable", "message": "Keycloak cannot issue a fresh token right now."})
    clock.now += 20
    tried = []
    while path.exists() and len(tried) < 10:
        assert token_in(path) == token, "the file lost its token before it expired"
        tried.append(clock.now - T0)
        clock.now += k.step()
    assert tried == [20, 22, 26, 30]  # backoff 2 s, 4 s, then the 4 s left to the token's expiry
    assert "Keycloak cannot issue a fresh token right now." in caplog.text
    assert "token file base removed: its token has expired" in caplog.text
    issuer.refuse.clear()
    k.step()
    assert path.exists(), "not written again once tokenkeeper answered"


def test_session_end_removes_every_file_at_once(keeper, clock, issuer, tmp_path):
    files = (TokenFile("base", str(tmp_path / "t" / "base")),
             TokenFile("trino", str(tmp_path / "t" / "trino"), "json", audience="trino"),
             TokenFile("hdr", str(tmp_path / "t" / "hdr"), "header"))
    issuer.tokens["audience=trino"] = (jwt(iat=T0 - 10, exp=T0 + 20), T0 + 20)
    k, fake = keeper(*files)
    k.step()
    clock.now += 10
    k.step()  # trino refreshed: due at T0 + 30
    assert sorted(os.listdir(tmp_path / "t")) == ["base", "hdr", "trino"]
    issuer.refuse["*"] = LOGIN_REQUIRED
    clock.now += 10  # base and hdr are due; trino is not
    seen = len(fake.seen)
    k.step()
    assert os.listdir(tmp_path / "t") == [], "a file outlived the session"
    assert len(fake.seen) == seen + 3, "trino was not checked at once"
    with pytest.raises(tokenkeeper.LoginRequired):
        tokenkeeper.get_token(url=fake.url)
    # The user logs in again: the files come back at the next try.
    issuer.refuse.clear()
    clock.now += k.step()
    k.step()
    assert sorted(os.listdir(tmp_path / "t")) == ["base", "hdr", "trino"]


def test_a_refused_server_token_removes_the_files(keeper, clock, issuer, tmp_path):
    k, _ = keeper()
    k.step()
    issuer.refuse["*"] = (401, {"error": "unauthorized", "message": "The JupyterHub token is invalid or expired."})
    clock.now += 20
    k.step()
    assert not (tmp_path / "tokens" / "base").exists()


def test_login_required_for_one_identity_provider_leaves_the_other_files(keeper, issuer, clock, tmp_path):
    files = (TokenFile("base", str(tmp_path / "t" / "base")),
             TokenFile("gh", str(tmp_path / "t" / "gh"), idp="github"))
    k, _ = keeper(*files)
    k.step()
    issuer.refuse["idp=github"] = (409, {"error": "login_required", "message": "The identity provider's token "
                                         "that Keycloak holds for this user has expired"})
    clock.now += 20
    k.step()
    assert os.listdir(tmp_path / "t") == ["base"]
    assert token_in(tmp_path / "t" / "base") == issuer.tokens["base"][0]


@pytest.mark.parametrize("refusal, want", [
    ((403, {"error": "audience_not_allowed", "message": "tokenkeeper hands out no token for this audience."}),
     "an admin allows it in tokenkeeper's audiences setting"),
    ((502, {"error": "exchange_refused", "message": 'Keycloak refused a token for audience "trino": x: y'}),
     'Keycloak refused a token for audience "trino": x: y'),
    ((200, {"user": "alice", "access_token": jwt(iat=T0, exp=T0 + 30), "expires_in": 30}),
     "this tokenkeeper does not serve audience tokens"),
])
def test_a_refused_audience_writes_no_file_and_says_why(keeper, issuer, tmp_path, caplog, refusal, want):
    files = (TokenFile("base", str(tmp_path / "t" / "base")),
             TokenFile("trino", str(tmp_path / "t" / "trino"), audience="trino"))
    issuer.refuse["audience=trino"] = refusal
    k, _ = keeper(*files)
    k.step()
    assert os.listdir(tmp_path / "t") == ["base"]
    assert "token file trino not refreshed" in caplog.text and want in caplog.text


# --- starting and stopping ----------------------------------------------------------


def wait_for(condition, limit=10):
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


def test_start_removes_files_an_earlier_server_left(fakes, tmp_path):
    fake = fakes(status=503, body={"error": "unavailable", "message": "Keycloak cannot issue a fresh token right now."})
    path = tmp_path / "base"
    path.write_text("left by an earlier server\n")
    k = Keeper([TokenFile("base", str(path))], fake.url, "server-token")
    k.start()
    try:
        assert not path.exists(), "a file no keeper keeps fresh was left in place"
        wait_for(lambda: len(fake.seen) > 0)
    finally:
        k.stop()


def test_stop_ends_the_thread_and_removes_the_files(fakes, tmp_path):
    issuer = Issuer(time.time, life=600)
    fake = fakes(answer=issuer)
    path = tmp_path / "base"
    k = Keeper([TokenFile("base", str(path))], fake.url, "server-token")
    k.start()
    wait_for(path.exists)
    assert token_in(path) == issuer.tokens["base"][0]
    k.stop()
    assert not path.exists()
    assert not k._thread.is_alive()


def test_a_request_in_flight_at_stop_writes_nothing(fakes, tmp_path):
    issuer = Issuer(time.time, life=600)
    asked_, release = threading.Event(), threading.Event()

    def slow(query):
        asked_.set()
        release.wait(10)
        return issuer(query)

    fake = fakes(answer=slow)
    path = tmp_path / "base"
    k = Keeper([TokenFile("base", str(path))], fake.url, "server-token")
    k.start()
    assert asked_.wait(10)
    k.stop(timeout=0)
    release.set()
    k._thread.join(10)
    assert not k._thread.is_alive()
    assert os.listdir(tmp_path) == [], "a file was written after stop"


def test_the_environment_configures_the_keeper(fakes, tmp_path, caplog):
    issuer = Issuer(time.time, life=600)
    fake = fakes(answer=issuer)
    spec = {"base": {"path": str(tmp_path / "base")}, "hdr": {"path": str(tmp_path / "hdr"), "format": "header"}}
    environ = {"TOKENKEEPER_TOKEN_FILES": json.dumps(spec), "TOKENKEEPER_URL": fake.url,
               "JUPYTERHUB_API_TOKEN": "server-token"}
    k = tokenfiles.start_from_environment(environ, logging.getLogger("tokenkeeper-test"))
    try:
        wait_for(lambda: (tmp_path / "hdr").exists())
        assert content(tmp_path / "hdr") == f"Authorization: Bearer {issuer.tokens['base'][0]}\n"
        assert all(auth == "token server-token" for _, _, auth in fake.seen)
    finally:
        k.stop()


def test_a_path_in_the_home_directory_is_expanded_for_the_servers_programs(fakes, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    monkeypatch.setenv("HOME", str(home))
    issuer = Issuer(time.time, life=600)
    fake = fakes(answer=issuer)
    environ = {"TOKENKEEPER_TOKEN_FILES": json.dumps({"base": {"path": "~/.tokenkeeper/tokens/base"}}),
               "TOKENKEEPER_TOKEN_FILE_BASE": "~/.tokenkeeper/tokens/base",
               "TOKENKEEPER_URL": fake.url, "JUPYTERHUB_API_TOKEN": "server-token"}
    k = tokenfiles.start_from_environment(environ, logging.getLogger("tokenkeeper-test"))
    path = home / ".tokenkeeper" / "tokens" / "base"
    try:
        assert environ["TOKENKEEPER_TOKEN_FILE_BASE"] == str(path)
        wait_for(path.exists)
        assert token_in(path) == issuer.tokens["base"][0]
        assert (mode(home / ".tokenkeeper"), mode(path.parent), mode(path)) == (0o700, 0o700, 0o600)
    finally:
        k.stop()
    assert not path.exists()


@pytest.mark.parametrize("environ, want", [
    ({}, None),
    ({"TOKENKEEPER_TOKEN_FILES": "{}"}, None),
    ({"TOKENKEEPER_TOKEN_FILES": '{"base": {"path": "rel"}}', "TOKENKEEPER_URL": "u", "JUPYTERHUB_API_TOKEN": "t"},
     "TOKENKEEPER_TOKEN_FILES is not valid, so no token files are kept: 'base': path must be"),
    ({"TOKENKEEPER_TOKEN_FILES": '{"base": {"path": "/t/b"}}'},
     "TOKENKEEPER_TOKEN_FILES is set, but TOKENKEEPER_URL and JUPYTERHUB_API_TOKEN are not"),
])
def test_without_a_usable_environment_nothing_starts(caplog, environ, want):
    caplog.set_level(logging.DEBUG)
    assert tokenfiles.start_from_environment(environ, logging.getLogger("tokenkeeper-test")) is None
    assert (want in caplog.text) if want else caplog.text == ""
