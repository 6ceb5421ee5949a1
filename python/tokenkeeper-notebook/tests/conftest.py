"""Fixtures the notebook package's tests share."""

import pytest

from fakes import Fake


@pytest.fixture
def fakes():
    """Start fake tokenkeepers (keyword arguments of Fake); all are closed after the test."""
    started = []
    yield lambda **kw: started.append(Fake(**kw)) or started[-1]
    for f in started:
        f.close()


@pytest.fixture
def clock():
    """The keeper's wall clock, which the test moves."""
    from test_tokenfiles import Clock
    return Clock()


@pytest.fixture
def issuer(clock):
    """Makes access tokens on the test's clock."""
    from test_tokenfiles import Issuer
    return Issuer(clock)


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.delenv("TOKENKEEPER_URL", raising=False)
    monkeypatch.delenv("TOKENKEEPER_TOKEN_FILES", raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
