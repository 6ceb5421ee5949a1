"""Tests of what the token-file keeper tells tokenkeeper (reports of its files, PUT token-files) and
hears from it (the end of the user's session, GET session-end, long-polled).

The keeper talks to fake tokenkeepers on loopback. Its wall clock and its
pauses are fakes the tests move; the tests that run its threads wait for
what they check with a deadline, never for a set time.
"""

import json
import logging
import os
import threading
import time

import pytest

from fakes import FakeTime, jwt
from test_tokenfiles import LOGIN_REQUIRED, T0, Issuer, wait_for
from tokenkeeper import keeperapi, tokenfiles
from tokenkeeper.tokenfiles import Keeper, TokenFile

NOT_FOUND = (404, {"error": "not_found", "message": "404 page not found"})
UNAVAILABLE = (503, {"error": "unavailable", "message": "tokenkeeper is starting"})


@pytest.fixture
def pause():
    """The keeper's pauses: recorded, and over at once."""
    return FakeTime()


@pytest.fixture
def keeper(fakes, clock, issuer, pause, tmp_path, caplog):
    """Return make(session_end=None, files=None, **options) -> (keeper, fake) for files in tmp_path/t."""
    caplog.set_level(logging.DEBUG, logger="tokenkeeper-test")

    def make(session_end=None, files=None, **options):
        fake = fakes(answer=issuer, session_end=session_end, **options.pop("fake", {}))
        files = files or (TokenFile("base", str(tmp_path / "t" / "base")),
                          TokenFile("trino", str(tmp_path / "t" / "trino.json"), "json", audience="trino"))
        options.setdefault("random", lambda: 0.0)
        k = Keeper(files, fake.url, "server-token", now=clock, clock=pause.clock, sleep=pause.sleep,
                   log=logging.getLogger("tokenkeeper-test"), **options)
        return k, fake

    return make


def answers(*seq):
    """A session-end answerer giving seq's answers in turn, then 404 (which ends watch())."""
    seq = list(seq)
    return lambda query: seq.pop(0) if seq else NOT_FOUND


def rfc3339(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def listed(fake):
    """The file names of each report the fake took."""
    return [[f["name"] for f in r.body["files"]] for r in fake.reports]


# --- reports of the files ------------------------------------------------------------


def test_a_report_names_each_file_its_mode_and_when_written_never_its_token(keeper, tmp_path, issuer):
    k, fake = keeper(server_name="gpu")
    k.step()
    (report,) = fake.reports
    assert report.path == "/services/tokenkeeper/token-files"
    assert report.authorization == "token server-token" and report.content_type == "application/json"
    assert report.body == {"server": "gpu", "files": [
        {"name": "base", "mode": "0600", "modified": rfc3339(os.stat(tmp_path / "t" / "base").st_mtime)},
        {"name": "trino.json", "mode": "0600", "modified": rfc3339(os.stat(tmp_path / "t" / "trino.json").st_mtime)},
    ]}
    for token, _ in issuer.tokens.values():
        assert token not in report.text and token.split(".")[1] not in report.text
    assert "eyJ" not in report.text


def test_a_report_gives_each_files_own_mode_and_time(keeper, tmp_path, issuer, clock):
    issuer.tokens["audience=trino"] = (jwt(iat=T0 - 10, exp=T0 + 20), T0 + 20)  # due at T0 + 10, base at T0 + 20
    k, fake = keeper()
    k.step()
    base = tmp_path / "t" / "base"
    os.chmod(base, 0o640)  # the user's doing
    os.utime(base, (T0 - 100, T0 - 100))
    issuer.refuse["audience=trino"] = LOGIN_REQUIRED
    clock.now += 10
    k.step()  # trino removed, base left as it is
    assert fake.reports[-1].body["files"] == [{"name": "base", "mode": "0640", "modified": rfc3339(T0 - 100)}]


def test_the_server_name_comes_from_the_environment(fakes, tmp_path):
    issuer = Issuer(time.time, life=600)
    fake = fakes(answer=issuer)
    environ = {"TOKENKEEPER_TOKEN_FILES": json.dumps({"base": {"path": str(tmp_path / "base")}}),
               "TOKENKEEPER_URL": fake.url, "JUPYTERHUB_API_TOKEN": "server-token", "JUPYTERHUB_SERVER_NAME": "gpu"}
    k = tokenfiles.start_from_environment(environ, logging.getLogger("tokenkeeper-test"))
    try:
        wait_for(lambda: fake.reports)
        assert fake.reports[0].body["server"] == "gpu"
    finally:
        k.stop()
    assert fake.reports[-1].body == {"server": "gpu", "files": []}, "stop did not report that the files are gone"


def test_each_rewrite_and_each_removal_is_reported(keeper, tmp_path, issuer, clock):
    k, fake = keeper()
    k.step()
    assert listed(fake) == [["base", "trino.json"]]
    k.step()
    assert len(fake.reports) == 1, "reported with nothing written or removed"
    clock.now += 20
    k.step()
    assert listed(fake)[1:] == [["base", "trino.json"]], "a rewrite was not reported"
    issuer.refuse["*"] = LOGIN_REQUIRED
    clock.now += 20
    k.step()
    assert listed(fake)[-1] == [], "the removal was not reported"
    clock.now += k.step()
    k.step()
    assert len(fake.reports) == 3, "reported again with nothing written or removed"


def test_nothing_is_reported_before_a_file_is_written(keeper, issuer):
    issuer.refuse["*"] = LOGIN_REQUIRED
    k, fake = keeper()
    k.step()
    k.stop()
    assert fake.reports == []


def test_stop_reports_that_the_server_keeps_no_files(keeper):
    k, fake = keeper()
    k.step()
    k.stop()
    assert listed(fake) == [["base", "trino.json"], []]


@pytest.mark.parametrize("report_status", [404, 500])
def test_a_failed_report_leaves_the_files_alone_and_is_made_again_at_the_next_step(keeper, tmp_path, caplog,
                                                                                  report_status):
    k, fake = keeper(fake={"report_status": report_status})
    assert k.step() == pytest.approx(20)
    assert sorted(os.listdir(tmp_path / "t")) == ["base", "trino.json"]
    assert len(fake.reports) == 1
    assert [r.levelname for r in caplog.records if "not reported" in r.message] == ["DEBUG"]
    assert k.step() == pytest.approx(20)
    assert len(fake.reports) == 2, "not made again"
    fake.report_status = 204
    k.step()
    k.step()
    assert listed(fake) == [["base", "trino.json"]] * 3, "made again after tokenkeeper took it"


def test_a_report_to_a_tokenkeeper_that_is_down_leaves_the_files_alone(keeper, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(tokenfiles, "report_files", refuse)
    k, _ = keeper()
    assert k.step() == pytest.approx(20)
    assert sorted(os.listdir(tmp_path / "t")) == ["base", "trino.json"]


# --- the end of the session --------------------------------------------------------


def test_the_files_are_removed_as_soon_as_tokenkeeper_says_the_session_ended(keeper, tmp_path):
    seen_at_next_ask = []

    def session_end(query):
        n = len(fake.waits)
        if n == 1:
            return 200, {"ended": False, "since": "2027-01-15T08:00:00Z"}
        if n == 2:
            return 200, {"ended": True, "since": "2027-01-15T08:04:00Z"}
        seen_at_next_ask.append((sorted(os.listdir(tmp_path / "t")), listed(fake)[-1]))
        return NOT_FOUND

    k, fake = keeper(session_end)
    k.step()
    asks = len(fake.seen)
    k.watch()
    assert seen_at_next_ask == [([], [])], "the files outlived the answer that the session ended, or were not reported"
    assert [q.get("since") for q, _ in fake.waits] == [None, ["2027-01-15T08:00:00Z"], ["2027-01-15T08:04:00Z"]]
    assert all(q["wait"] == ["300"] and auth == "token server-token" for q, auth in fake.waits)
    assert len(fake.seen) == asks, "the session's end made the keeper ask tokenkeeper at once"


def test_an_ended_session_is_not_written_back_by_a_token_fetched_before(keeper, tmp_path, issuer):
    # The keeper fetches a token; tokenkeeper says the session ended before
    # the answer arrives: the answer is not written.
    fetching, ended = threading.Event(), threading.Event()

    def slow(query):
        fetching.set()
        assert ended.wait(10)
        return issuer(query)

    def session_end(query):
        if len(fake.waits) == 1:
            assert fetching.wait(10)
            return 200, {"ended": True, "since": "2027-01-15T08:04:00Z"}
        ended.set()  # asked again: the end was acted on
        return NOT_FOUND

    k, fake = keeper(session_end, files=(TokenFile("base", str(tmp_path / "t" / "base")),))
    fake.answer = slow
    watcher = threading.Thread(target=k.watch, daemon=True)
    watcher.start()
    assert k.step() == pytest.approx(tokenfiles.RETRY_FIRST)
    watcher.join(10)
    assert not (tmp_path / "t" / "base").exists(), "a token of the ended session was written"


def test_a_tokenkeeper_without_session_end_is_not_asked_again(keeper, caplog, pause):
    k, fake = keeper()
    watcher = threading.Thread(target=k.watch, daemon=True)
    watcher.start()
    watcher.join(10)
    try:
        assert not watcher.is_alive(), "the watcher kept asking"
    finally:
        k.stop()
    assert len(fake.waits) == 1 and pause.sleeps == []
    said = [r for r in caplog.records if "session-end" in r.message]
    assert [r.levelname for r in said] == ["INFO"]


@pytest.mark.parametrize("failure, headers, waits", [
    (UNAVAILABLE, {"Retry-After": "120"}, [120] * 6 + [128, 256, 512, 600, 600]),
    (UNAVAILABLE, {}, [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]),
    ((401, {"error": "unauthorized", "message": "The JupyterHub token is invalid or expired."}), {},
     [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]),
    ((500, {"error": "internal", "message": "oops"}), {}, [2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60]),
])
def test_session_end_failures_back_off(keeper, pause, failure, headers, waits):
    k, fake = keeper(answers(*[(*failure, headers)] * len(waits)))
    k.watch()
    assert pause.sleeps == waits
    assert len(fake.waits) == len(waits) + 1


def test_session_end_backoff_has_jitter_and_starts_again_after_an_answer(keeper, pause):
    ok = (200, {"ended": False, "since": "2027-01-15T08:00:00Z"})
    k, fake = keeper(answers(UNAVAILABLE, UNAVAILABLE, ok, UNAVAILABLE), random=lambda: 0.5)
    k.watch()
    # 2 and 4 s less a quarter, the least time between asks after an
    # answer at once, then 2 s less a quarter again.
    assert pause.sleeps == [1.5, 3, tokenfiles.SESSION_END_EVERY, 1.5]
    assert [q.get("since") for q, _ in fake.waits][-2:] == [["2027-01-15T08:00:00Z"]] * 2


def test_the_long_poll_outlasts_the_wait_it_asks_for(keeper, monkeypatch):
    timeouts = []
    real = keeperapi._opener

    class Recording:
        def open(self, req, timeout):
            timeouts.append((req.full_url, timeout))
            return real.open(req, timeout=timeout)

    monkeypatch.setattr(keeperapi, "_opener", Recording())
    k, _ = keeper()
    k.watch()
    ((url, timeout),) = timeouts
    assert "wait=300" in url
    assert timeout >= 300 + 30


def test_stop_does_not_wait_for_the_long_poll_and_ends_the_watcher(fakes, tmp_path):
    asked, release = threading.Event(), threading.Event()

    def hold(query):
        asked.set()
        release.wait(30)
        return 200, {"ended": True, "since": "2027-01-15T08:04:00Z"}

    issuer = Issuer(time.time, life=600)
    fake = fakes(answer=issuer, session_end=hold)
    path = tmp_path / "base"
    k = Keeper([TokenFile("base", str(path))], fake.url, "server-token")
    k.start()
    try:
        assert asked.wait(10)
        wait_for(path.exists)
        started = time.monotonic()
        k.stop()
        assert time.monotonic() - started < tokenfiles.WATCHER_JOIN + 1, "stop waited for the long poll"
        assert k._watcher.daemon
    finally:
        release.set()
    wait_for(lambda: not k._watcher.is_alive())
    assert len(fake.waits) == 1, "the watcher asked again after stop"
    assert not path.exists()


def test_a_started_keeper_removes_the_files_when_the_session_ends(fakes, tmp_path):
    ended = threading.Event()

    def session_end(query):
        if "since" in query:
            return NOT_FOUND
        ended.wait(30)
        return 200, {"ended": True, "since": "2027-01-15T08:04:00Z"}

    issuer = Issuer(time.time, life=600)
    fake = fakes(answer=issuer, session_end=session_end)
    path = tmp_path / "base"
    k = Keeper([TokenFile("base", str(path))], fake.url, "server-token", sleep=lambda seconds: None)
    k.start()
    try:
        wait_for(path.exists)
        ended.set()
        wait_for(lambda: not path.exists())
        wait_for(lambda: fake.reports and fake.reports[-1].body["files"] == [])
    finally:
        ended.set()
        k.stop()
