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


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.delenv("TOKENKEEPER_URL", raising=False)
    monkeypatch.delenv("TOKENKEEPER_TOKEN_FILES", raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
