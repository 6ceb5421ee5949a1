"""configure(token_files=...): the spec, its checks, and the variables the pre-spawn hook sets."""

import asyncio
import json
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets.config import Config

import tokenkeeper_hub as tk
from test_tokenkeeper_hub import ACCESS, run_hook

FILES = {"base": {}, "trino": {"audience": "trino", "format": "json"},
         "gh": {"idp": "github", "format": "header", "path": "/home/{username}/.gh-token"}}
WANT = {
    "base": {"path": "~/.tokenkeeper/tokens/base", "format": "raw"},
    "trino": {"path": "~/.tokenkeeper/tokens/trino", "format": "json", "audience": "trino"},
    "gh": {"path": "/home/alice/.gh-token", "format": "header", "idp": "github"},
}
WANT_ENV = {
    "TOKENKEEPER_TOKEN_FILES": json.dumps(WANT, sort_keys=True),
    "TOKENKEEPER_TOKEN_FILE_BASE": "~/.tokenkeeper/tokens/base",
    "TOKENKEEPER_TOKEN_FILE_TRINO": "~/.tokenkeeper/tokens/trino",
    "TOKENKEEPER_TOKEN_FILE_GH": "/home/alice/.gh-token",
}


def test_each_file_gets_its_format_and_path():
    assert tk.normalize_token_files(FILES) == {
        "base": {"path": "~/.tokenkeeper/tokens/base", "format": "raw"},
        "trino": {"path": "~/.tokenkeeper/tokens/trino", "format": "json", "audience": "trino"},
        "gh": {"path": "/home/{username}/.gh-token", "format": "header", "idp": "github"},
    }
    assert tk.normalize_token_files({"base": None}, token_dir="/run/user/{username}/tokens/") == {
        "base": {"path": "/run/user/{username}/tokens/base", "format": "raw"}}


def test_the_default_directory_is_in_the_users_home_not_in_tmp():
    assert tk.DEFAULT_TOKEN_DIR == "~/.tokenkeeper/tokens"
    env = tk.token_file_environment(tk.normalize_token_files({"base": {}}), "alice")
    assert env["TOKENKEEPER_TOKEN_FILE_BASE"] == "~/.tokenkeeper/tokens/base"
    assert not env["TOKENKEEPER_TOKEN_FILE_BASE"].startswith(("/tmp", "/var/tmp", "/dev/shm"))


@pytest.mark.parametrize("token_dir", ["/tmp/tokenkeeper", "/srv/tokens", "/srv/{{username}}/tokens", "/"])
def test_a_token_dir_without_the_user_name_is_refused_unless_servers_have_their_own_files(token_dir):
    with pytest.raises(ValueError) as err:
        tk.normalize_token_files({"base": {}}, token_dir=token_dir)
    assert str(err.value).startswith(f"tokenkeeper: token_dir {token_dir!r} holds no {{username}} and is not in "
                                     "the home directory (~/): servers of different users that share a file system "
                                     "would share it")
    assert "token_paths_per_user=True" in str(err.value)
    files = tk.normalize_token_files({"base": {}}, token_dir=token_dir, token_paths_per_user=True)
    assert tk.token_file_environment(files, "alice")["TOKENKEEPER_TOKEN_FILE_BASE"] == \
        token_dir.rstrip("/").format(username="x") + "/base"


def test_a_path_without_the_user_name_is_refused_unless_servers_have_their_own_files():
    with pytest.raises(ValueError, match=r"'gh': path '/srv/gh-token' holds no \{username\}"):
        tk.normalize_token_files({"gh": {"idp": "github", "path": "/srv/gh-token"}})
    assert tk.normalize_token_files({"gh": {"path": "/srv/gh-token"}}, token_paths_per_user=True) == {
        "gh": {"path": "/srv/gh-token", "format": "raw"}}
    assert tk.normalize_token_files({"gh": {"path": "~/.gh-token"}}) == {"gh": {"path": "~/.gh-token", "format": "raw"}}


@pytest.mark.parametrize("token_files", [{"base": {}}, lambda spawner: {"base": {}}])
def test_configure_refuses_a_shared_token_dir_when_the_hub_loads_its_configuration(token_files):
    with pytest.raises(ValueError, match="token_dir '/srv/tokens' holds no {username}"):
        tk.configure(Config(), command=["tokenkeeper"], url="http://127.0.0.1:1", token_files=token_files,
                     token_dir="/srv/tokens")
    c = Config()
    tk.configure(c, command=["tokenkeeper"], url="http://127.0.0.1:1", token_files=token_files,
                 token_dir="/srv/tokens", token_paths_per_user=True)
    assert c.Spawner.pre_spawn_hook is not None


@pytest.mark.parametrize("files, want", [
    (["base"], "token_files must be a dict from file names to their settings, not list"),
    ({"Base": {}}, "'Base': a name is a lower-case letter"),
    ({"base-1": {}}, "'base-1': a name is a lower-case letter"),
    ({"base": "raw"}, "'base': settings must be a dict"),
    ({"base": {"mode": 0o644}}, "'base': unknown setting 'mode' (want path, format, audience or idp)"),
    ({"base": {"format": "yaml"}}, "'base': format must be one of raw, json, header, not 'yaml'"),
    ({"base": {"path": "tokens/base"}}, "'base': path 'tokens/base' must be absolute and normalised"),
    ({"base": {"path": "/tmp/{username}/../x"}}, "must be absolute and normalised"),
    ({"base": {"path": "~/../x"}}, "must be absolute and normalised, or ~/ and a normalised path"),
    ({"base": {"path": "~bob/x"}}, "must be absolute and normalised"),
    ({"base": {"path": "~/"}}, "must be absolute and normalised"),
    ({"base": {"path": ""}}, "path '' must be absolute"),
    ({"base": {"path": 7}}, "path 7 must be a string"),
    ({"base": {"path": "/home/{home}/t"}}, "has a placeholder other than {username}"),
    ({"base": {"path": "/home/{username/t"}}, "a stray brace"),
    ({"base": {"audience": ""}}, "audience must be a non-empty string"),
    ({"base": {"audience": "trino", "idp": "github"}}, "not both"),
    ({"a": {"path": "/t/{username}"}, "b": {"path": "/t/{username}"}},
     "path '/t/{username}' is given to more than one file"),
])
def test_a_bad_spec_says_what_is_wrong(files, want):
    with pytest.raises(ValueError) as err:
        tk.normalize_token_files(files)
    assert str(err.value).startswith("tokenkeeper: token_files")
    assert want in str(err.value)


def test_a_bad_spec_lists_every_problem():
    with pytest.raises(ValueError) as err:
        tk.normalize_token_files({"A": {}, "b": {"format": "yaml", "idp": ""}})
    assert str(err.value).count(";") == 2


def test_configure_refuses_a_bad_spec_when_the_hub_loads_its_configuration():
    with pytest.raises(ValueError, match="'trino': unknown setting 'aud'"):
        tk.configure(Config(), command=["tokenkeeper"], url="http://127.0.0.1:1", token_files={"trino": {"aud": "t"}})


@pytest.mark.parametrize("name", ["a/b", "..", "x\0y"])
@pytest.mark.parametrize("path", ["/tmp/{username}/base", "~/{username}/base"])
def test_a_user_name_that_would_lead_elsewhere_is_refused(name, path):
    files = tk.normalize_token_files({"base": {"path": path}})
    with pytest.raises(ValueError, match="cannot be part of a path|is not normalised"):
        tk.token_file_environment(files, name)


def test_the_hook_tells_the_server_about_the_files():
    spawner, seen, err, port = asyncio.run(run_hook(token_files=FILES))
    assert err is None
    assert spawner.environment == {
        "SHARED": "1", "KEYCLOAK_ACCESS_TOKEN": ACCESS,
        "TOKENKEEPER_URL": f"http://127.0.0.1:{port}/services/tokenkeeper/", **WANT_ENV,
    }


def test_configure_passes_the_files_to_the_hook():
    def make(port):
        c = Config()
        tk.configure(c, command=["tokenkeeper"], url=f"http://127.0.0.1:{port}", token_files=FILES,
                     token_dir="/srv/tokens/{username}")
        return c.Spawner.pre_spawn_hook

    spawner, _, err, _ = asyncio.run(run_hook(make=make))
    assert err is None
    assert spawner.environment["TOKENKEEPER_TOKEN_FILE_BASE"] == "/srv/tokens/alice/base"
    assert spawner.environment["TOKENKEEPER_TOKEN_FILE_GH"] == "/home/alice/.gh-token"


def test_without_token_files_the_hook_sets_no_file_variables():
    spawner, _, err, _ = asyncio.run(run_hook())
    assert err is None
    assert not [k for k in spawner.environment if k.startswith("TOKENKEEPER_TOKEN_FILE")]


@pytest.mark.parametrize("use_async", [False, True])
def test_a_function_chooses_each_users_files(use_async):
    asked = []

    def choose(spawner):
        asked.append(spawner.user.name)
        return FILES if spawner.user.name == "alice" else None

    async def choose_async(spawner):
        return choose(spawner)

    spawner, _, err, _ = asyncio.run(run_hook(token_files=choose_async if use_async else choose))
    assert err is None
    assert asked == ["alice"]
    assert {k: v for k, v in spawner.environment.items() if k.startswith("TOKENKEEPER_TOKEN_FILE")} == WANT_ENV


@pytest.mark.parametrize("answer, want", [
    ({"base": {"format": "yaml"}}, "format must be one of raw, json, header"),
    (RuntimeError("no groups"), "no groups"),
])
def test_a_function_answering_a_bad_spec_fails_the_spawn_without_asking_tokenkeeper(answer, want):
    def choose(spawner):
        if isinstance(answer, Exception):
            raise answer
        return answer

    spawner, seen, err, _ = asyncio.run(run_hook(token_files=choose))
    assert isinstance(err, web.HTTPError) and err.status_code == 500
    assert err.log_message.startswith("The hub's token_files setting is wrong: ")
    assert want in err.log_message
    assert seen == []
    assert "KEYCLOAK_ACCESS_TOKEN" not in spawner.environment


def test_a_server_started_without_a_token_gets_no_files():
    spawner, _, err, _ = asyncio.run(run_hook(status=503, body={"error": "unavailable", "message": "x"},
                                              required=False, token_files=FILES))
    assert err is None
    assert spawner.environment == {"SHARED": "1"}


def test_the_notebook_package_reads_the_spec_the_hook_writes(monkeypatch):
    tokenfiles = pytest.importorskip("tokenkeeper.tokenfiles")
    monkeypatch.setenv("HOME", "/home/alice")
    files = tokenfiles.parse_spec(WANT_ENV["TOKENKEEPER_TOKEN_FILES"])
    assert {f.name: (f.path, f.format, f.target) for f in files} == {
        "base": ("/home/alice/.tokenkeeper/tokens/base", "raw", {}),
        "trino": ("/home/alice/.tokenkeeper/tokens/trino", "json", {"audience": "trino"}),
        "gh": ("/home/alice/.gh-token", "header", {"idp": "github"}),
    }
