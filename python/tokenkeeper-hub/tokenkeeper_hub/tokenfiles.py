"""Token files: what ``configure(token_files=...)`` puts into each server's environment.

The notebook package's Jupyter server extension reads the environment and
keeps the files fresh inside the server. ``token_files`` maps each file's
name to its settings, all optional::

    {"base": {},                                          # the user's own access token
     "trino": {"audience": "trino", "format": "json"},    # exchanged for client trino
     "github": {"idp": "github", "format": "header",      # the identity provider's token
                "path": "/home/{username}/.config/github-token"}}

- ``audience`` (a Keycloak client) or ``idp`` (an identity provider's
  alias), at most one: which token; neither is the user's own;
- ``format``: ``raw`` (default: the token and a newline), ``json``
  (``access_token``, ``token_type``, ``expires_at``, ``user``, and
  ``audience`` or ``idp``) or ``header`` (``Authorization: Bearer <token>``);
- ``path``: an absolute path in the server's file system, ``{username}``
  replaced by the user's name; default ``<token_dir>/<name>``.

A server gets ``TOKENKEEPER_TOKEN_FILES`` (the spec as JSON, paths
expanded) and ``TOKENKEEPER_TOKEN_FILE_<NAME>`` (each file's path; the name
in capitals).
"""

import json
import posixpath
import re

__all__ = ["DEFAULT_TOKEN_DIR", "FORMATS", "SPEC_VARIABLE", "normalize_token_files", "token_file_environment"]

# DEFAULT_TOKEN_DIR is where token files go unless their path says otherwise:
# a directory of the user's own that the server makes with mode 0700.
DEFAULT_TOKEN_DIR = "/tmp/tokenkeeper-{username}"

# SPEC_VARIABLE holds the files' spec in the server's environment; each
# file's path is in PATH_PREFIX + its name in capitals.
SPEC_VARIABLE = "TOKENKEEPER_TOKEN_FILES"
PATH_PREFIX = "TOKENKEEPER_TOKEN_FILE_"

FORMATS = ("raw", "json", "header")

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_KEYS = {"path", "format", "audience", "idp"}
_SAMPLE_USER = "user"


def normalize_token_files(token_files, token_dir=DEFAULT_TOKEN_DIR):
    """Return ``token_files`` with every file's ``format`` and ``path`` filled in.

    Raises ValueError naming every problem: a name that is not a lower-case
    letter followed by up to 31 lower-case letters, digits or ``_``, an
    unknown setting, a format other than ``raw``, ``json`` or ``header``,
    both ``audience`` and ``idp``, a path that is not absolute and
    normalised or has a placeholder other than ``{username}``, or two files
    with one path.
    """
    if not isinstance(token_files, dict):
        raise ValueError(f"tokenkeeper: token_files must be a dict from file names to their settings, "
                         f"not {type(token_files).__name__}")
    out, problems = {}, []
    for name, settings in token_files.items():
        settings = {} if settings is None else settings
        found = list(_problems(name, settings, token_dir))
        problems += [f"{name!r}: {p}" for p in found]
        if not found:
            out[name] = {"path": settings.get("path", _default_path(token_dir, name)),
                         "format": settings.get("format", "raw"),
                         **{k: settings[k] for k in ("audience", "idp") if settings.get(k) is not None}}
    paths = [f["path"] for f in out.values()]
    problems += [f"path {p!r} is given to more than one file" for p in sorted(set(paths)) if paths.count(p) > 1]
    if problems:
        raise ValueError("tokenkeeper: token_files: " + "; ".join(problems))
    return out


def _problems(name, settings, token_dir):
    """Yield what is wrong with one token file's name and settings."""
    if not isinstance(name, str) or not _NAME.match(name):
        yield "a name is a lower-case letter, then up to 31 lower-case letters, digits or '_'"
    if not isinstance(settings, dict):
        yield "settings must be a dict"
        return
    for key in sorted(set(settings) - _KEYS, key=str):
        yield f"unknown setting {key!r} (want path, format, audience or idp)"
    path = settings.get("path", _default_path(token_dir, name))
    problem = _path_problem(path) if isinstance(path, str) else "must be a string"
    if problem:
        yield f"path {path!r} {problem}"
    if settings.get("format", "raw") not in FORMATS:
        yield f"format must be one of {', '.join(FORMATS)}, not {settings['format']!r}"
    for key in ("audience", "idp"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            yield f"{key} must be a non-empty string, not {value!r}"
    if settings.get("audience") is not None and settings.get("idp") is not None:
        yield "a file holds a token for an audience or of an identity provider, not both"


def _default_path(token_dir, name):
    return f"{token_dir.rstrip('/')}/{name}"


def _path_problem(template):
    """Return what is wrong with a path template, or None."""
    try:
        path = template.format(username=_SAMPLE_USER)
    except (KeyError, IndexError, ValueError) as e:
        return f"has a placeholder other than {{username}} or a stray brace ({e})"
    if not posixpath.isabs(path) or posixpath.normpath(path) != path:
        return "must be absolute and normalised"
    return None


def token_file_environment(files, username):
    """Return the environment variables that tell ``username``'s server about normalised ``files``.

    Raises ValueError when a path made with the name is not absolute and
    normalised (a name with ``/``, or ``..``, would lead elsewhere).
    """
    if "/" in username or "\0" in username:
        raise ValueError(f"tokenkeeper: token_files: user name {username!r} cannot be part of a path")
    spec = {}
    for name, settings in files.items():
        path = settings["path"].format(username=username)
        if posixpath.normpath(path) != path:
            raise ValueError(f"tokenkeeper: token_files: {name!r}: path {path!r} for user {username!r} "
                             "is not normalised")
        spec[name] = {**settings, "path": path}
    env = {SPEC_VARIABLE: json.dumps(spec, sort_keys=True)}
    env.update({PATH_PREFIX + name.upper(): f["path"] for name, f in spec.items()})
    return env
