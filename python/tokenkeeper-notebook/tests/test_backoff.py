"""Tests of the token-file keeper's backoff while tokenkeeper has no token to serve (409, 401) or cannot serve one (503).

Each keeper talks to a fake tokenkeeper on loopback that records, by the
test's clock, when each request came. The clock moves only as the tests
move it, to each next time the keeper says it is due: no test sleeps.
"""

import email.utils
import random
import time

import pytest

import tokenkeeper
from fakes import jwt
from tokenkeeper import tokenfiles
from tokenkeeper.tokenfiles import Keeper, TokenFile

T0 = 1_800_000_000
HOUR = 3600

LOGIN_REQUIRED = (409, {"error": "login_required",
                        "message": "The user has no valid Keycloak session: log in to JupyterHub again."})
UNAVAILABLE = (503, {"error": "unavailable", "message": "Keycloak cannot issue a fresh token right now; try again shortly."})


class Clock:
    """The tests' wall clock: the keepers schedule by it, the fake tokenkeeper records by it."""

    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


class Tokenkeeper:
    """A fake tokenkeeper's answers: ``answer`` (status, body) for every request, each recorded with its time.

    ``asks`` holds (time since T0, server token, target) per request.
    """

    def __init__(self, clock, answer):
        self.clock, self.answer, self.asks = clock, answer, []

    def __call__(self, query, authorization=None):
        target = next((f"{k}={query[k][0]}" for k in ("audience", "idp") if k in query), "base")
        self.asks.append((self.clock() - T0, authorization, target))
        status, body = self.answer(self.clock() - T0) if callable(self.answer) else self.answer
        if status == 200 and "audience" in query:  # tokenkeeper names the audience it served
            body = {**body, "audience": query["audience"][0]}
        return status, body

    def times(self, target="base", server=None):
        """The times (seconds since T0) of the requests for target, of one server or any."""
        return [t for t, auth, tgt in self.asks if tgt == target and (server is None or auth == f"token {server}")]


@pytest.fixture
def clock():
    return Clock()


def files_in(directory):
    """Three token files, as the issue's mass-logout estimate counts: the user's token, an audience's, a header."""
    return (TokenFile("base", str(directory / "base")),
            TokenFile("trino", str(directory / "trino"), "json", audience="trino"),
            TokenFile("hdr", str(directory / "hdr"), "header"))


def run(keepers, clock, until):
    """Step each keeper whenever it is due, as its thread would, moving the clock, until ``until`` s after T0."""
    due = [clock.now] * len(keepers)
    while True:
        i = min(range(len(keepers)), key=due.__getitem__)
        if due[i] >= T0 + until:
            return
        clock.now = max(clock.now, due[i])
        due[i] = clock.now + keepers[i].step()


def gaps(times):
    return [round(b - a, 6) for a, b in zip(times, times[1:])]


def no_jitter():
    return 0.0


def recording_fake(fakes, tk, headers=None):
    """A fake tokenkeeper on loopback answering as tk does, recording each request's Authorization."""
    fake = fakes(headers=headers)
    fake.answer = lambda query: tk(query, fake.seen[-1][2])
    return fake


def test_login_required_backs_off_doubling_to_ten_minutes_and_the_files_ask_together(fakes, clock, tmp_path):
    tk = Tokenkeeper(clock, LOGIN_REQUIRED)
    fake = recording_fake(fakes, tk)
    k = Keeper(files_in(tmp_path), fake.url, "server-token", now=clock, random=no_jitter)
    run([k], clock, 2 * HOUR)
    trino = tk.times("audience=trino")
    assert tk.times("base") == [t for t in trino for _ in "ab"], "a server's files did not ask together"  # base, hdr
    want = [2, 4, 8, 16, 32, 64, 128, 256, 512] + [tokenfiles.WAIT_MAX] * 10
    assert gaps(trino)[:len(want)] == want
    assert len(trino) <= 21, f"{len(trino)} asks per file in two hours"


def test_servers_that_failed_together_spread_apart(fakes, clock, tmp_path):
    tk = Tokenkeeper(clock, LOGIN_REQUIRED)
    fake = recording_fake(fakes, tk)
    servers = [Keeper([TokenFile("base", str(tmp_path / str(i) / "base"))], fake.url, f"server-{i}", now=clock,
                      random=random.Random(i).random) for i in range(40)]
    run(servers, clock, 2 * HOUR)
    for i in range(40):
        waits = gaps(tk.times(server=f"server-{i}"))
        for n, wait in enumerate(waits):
            full = min(tokenfiles.WAIT_MAX, tokenfiles.RETRY_FIRST * 2 ** n)
            assert full / 2 <= wait <= full, f"server {i}'s wait {n + 1} is {wait} s, want {full / 2} to {full}"
    # Their tenth asks (in the tenth minute or so) are spread over minutes,
    # and no ten seconds see more than a few of them.
    tenth = sorted(tk.times(server=f"server-{i}")[9] for i in range(40))
    assert tenth[-1] - tenth[0] >= 120, f"the servers' tenth asks span {tenth[-1] - tenth[0]:.0f} s"
    crowd = max(sum(1 for t in tenth if s <= t < s + 10) for s in tenth)
    assert crowd <= 8, f"{crowd} of 40 servers asked within 10 s of each other"


@pytest.mark.parametrize("answer", [LOGIN_REQUIRED, UNAVAILABLE])
def test_mass_logout_asks_within_a_share_of_the_lookup_budget(fakes, clock, tmp_path, answer):
    # 100 servers with two files each, all refused at the same moment
    # (the worst case), for an hour. Each ask costs tokenkeeper an identity
    # lookup of the server's token unless the same token asked within the
    # identity cache's 10 s. Scaled to 1,000 servers, the lookups of the
    # second half hour must stay within half of the lookups' share of the
    # default hub_max_rps of 25: 2.5 a second.
    tk = Tokenkeeper(clock, answer)
    fake = recording_fake(fakes, tk)
    servers = [Keeper(files_in(tmp_path / str(i))[:2], fake.url, f"server-{i}", now=clock,
                      random=random.Random(i).random) for i in range(100)]
    run(servers, clock, HOUR)
    lookups = 0
    for i in range(100):
        last = None
        for t in sorted(tk.times(server=f"server-{i}") + tk.times("audience=trino", f"server-{i}")):
            if t >= HOUR / 2 and (last is None or t - last >= 10):
                lookups += 1
                last = t
    per_second = lookups * 10 / (HOUR / 2)
    assert per_second <= 2.5, f"1,000 servers would cost {per_second:.1f} identity lookups a second"


def test_retry_after_is_honoured_up_to_the_cap(fakes, clock, tmp_path):
    tk = Tokenkeeper(clock, UNAVAILABLE)
    fake = recording_fake(fakes, tk, headers={"Retry-After": "120"})
    k = Keeper([TokenFile("base", str(tmp_path / "base"))], fake.url, "server-token", now=clock, random=no_jitter)
    run([k], clock, HOUR)
    assert gaps(tk.times())[:10] == [120] * 6 + [128, 256, 512, tokenfiles.WAIT_MAX]


@pytest.mark.parametrize("retry_after, asked, wait", [
    ("86400", 86400, tokenfiles.WAIT_MAX),  # a day: the cap
    (lambda: email.utils.formatdate(time.time() + 300, usegmt=True), 300, 300),  # an HTTP date five minutes on
])
def test_retry_after_as_a_long_delay_or_a_date(fakes, clock, tmp_path, retry_after, asked, wait):
    tk = Tokenkeeper(clock, LOGIN_REQUIRED)
    value = retry_after() if callable(retry_after) else retry_after
    fake = recording_fake(fakes, tk, headers={"Retry-After": value})
    with pytest.raises(tokenkeeper.LoginRequired) as e:
        tokenkeeper.get_token(url=fake.url)
    assert e.value.retry_after == pytest.approx(asked, abs=2)
    k = Keeper([TokenFile("base", str(tmp_path / "base"))], fake.url, "server-token", now=clock, random=no_jitter)
    run([k], clock, tokenfiles.WAIT_MAX + 1)
    assert gaps(tk.times()[1:])[0] == pytest.approx(wait, abs=2)  # after get_token's ask


def test_a_file_whose_token_is_valid_is_asked_for_again_when_it_expires(fakes, clock, tmp_path):
    # A 600 s token written at T0 is due again at two thirds (T0 + 400).
    # From then on tokenkeeper answers 503 asking for an hour: the keeper
    # asks again at the token's expiry, not an hour later, and removes the
    # file then, since its token has expired.
    token = jwt(iat=T0, exp=T0 + 600)
    ok = (200, {"user": "alice", "access_token": token, "token_type": "Bearer", "expires_in": 600})
    tk = Tokenkeeper(clock, lambda since: ok if since == 0 else UNAVAILABLE)
    fake = recording_fake(fakes, tk, headers={"Retry-After": "3600"})
    path = tmp_path / "base"
    k = Keeper([TokenFile("base", str(path))], fake.url, "server-token", now=clock, random=no_jitter)
    run([k], clock, 599)
    assert path.read_text().strip() == token, "the file lost its valid token"
    run([k], clock, 601)
    assert tk.times() == [0, 400, 600]
    assert not path.exists(), "the file outlived its token"


def test_a_token_again_resets_the_backoff_and_brings_every_file_back(fakes, clock, tmp_path):
    # The user logs in again after an hour: the next ask writes every file,
    # and a later logout starts the backoff from RETRY_FIRST again.
    def answer(since):
        if HOUR <= since < 2 * HOUR:
            iat = T0 + int(since)
            return 200, {"user": "alice", "access_token": jwt(iat=iat, exp=iat + 300), "token_type": "Bearer",
                         "expires_in": 300}
        return LOGIN_REQUIRED

    tk = Tokenkeeper(clock, answer)
    fake = recording_fake(fakes, tk)
    k = Keeper(files_in(tmp_path), fake.url, "server-token", now=clock, random=no_jitter)
    run([k], clock, HOUR + tokenfiles.WAIT_MAX)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "hdr", "trino"]
    run([k], clock, 2 * HOUR + tokenfiles.WAIT_MAX)
    after = [t for t in tk.times("audience=trino") if t >= 2 * HOUR]
    assert gaps(after)[:3] == [2, 4, 8]
    assert list(tmp_path.iterdir()) == []
