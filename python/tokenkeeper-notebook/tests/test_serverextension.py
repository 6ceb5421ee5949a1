"""The installed package's Jupyter server extension, run by a real Jupyter server.

These tests need jupyter_server and the package installed as a wheel (``make
pytest`` installs it into the test stack's virtualenv): the extension is
enabled by the wheel's ``etc/jupyter/jupyter_server_config.d/tokenkeeper.json``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import distribution

import pytest

from fakes import free_port
from test_tokenfiles import Issuer, wait_for

pytest.importorskip("jupyter_server")

CONFIG = "etc/jupyter/jupyter_server_config.d/tokenkeeper.json"


def test_installing_the_package_enables_the_extension():
    files = [f for f in distribution("tokenkeeper-notebook").files or [] if str(f).endswith(CONFIG)]
    assert len(files) == 1, f"the installed package has no {CONFIG}"
    assert json.loads(files[0].read_text()) == {
        "ServerApp": {"jpserver_extensions": {"tokenkeeper.serverextension": True}},
    }
    installed = os.path.join(sys.prefix, CONFIG)
    assert os.path.samefile(files[0].locate(), installed), "the configuration is not in the environment's etc/jupyter"


def start_server(tmp_path, environ):
    """Start a Jupyter server from this environment (not from the source tree) on loopback."""
    args = [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={free_port()}",
            "--ServerApp.port_retries=0", "--ServerApp.open_browser=False", "--ServerApp.token=test",
            f"--ServerApp.root_dir={tmp_path}", "--debug"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    env = {**os.environ, **environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    with open(tmp_path / "server.log", "w") as log:
        return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_jupyter_server_keeps_the_files_until_it_stops(fakes, tmp_path, stop_signal):
    issuer = Issuer(time.time, life=600)
    fake = fakes(answer=issuer)
    files = tmp_path / "tokens"
    spec = {"base": {"path": str(files / "base")}, "hdr": {"path": str(files / "hdr"), "format": "header"}}
    server = start_server(tmp_path, {"TOKENKEEPER_TOKEN_FILES": json.dumps(spec), "TOKENKEEPER_URL": fake.url,
                                     "JUPYTERHUB_API_TOKEN": "server-token"})
    try:
        wait_for(lambda: (files / "hdr").exists() or server.poll() is not None, limit=90)
        assert server.poll() is None, (tmp_path / "server.log").read_text()
        assert (files / "base").read_text() == issuer.tokens["base"][0] + "\n"
        assert sorted(os.listdir(files)) == ["base", "hdr"]
        server.send_signal(stop_signal)
        server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    log = (tmp_path / "server.log").read_text()
    assert "tokenkeeper: keeping token files fresh: base" in log
    assert os.listdir(files) == [], f"files outlived the server: {log}"
    assert "server-token" not in log and issuer.tokens["base"][0] not in log, "a token reached the log"


def test_a_server_without_token_files_runs_as_before(tmp_path):
    server = start_server(tmp_path, {})
    try:
        wait_for(lambda: "Jupyter Server" in (tmp_path / "server.log").read_text() and " is running at" in
                 (tmp_path / "server.log").read_text() or server.poll() is not None, limit=90)
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(60)
    log = (tmp_path / "server.log").read_text()
    assert "tokenkeeper.serverextension | extension was successfully loaded" in log
    assert "tokenkeeper: " not in log
