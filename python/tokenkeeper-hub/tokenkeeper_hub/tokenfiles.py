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
- ``path``: an absolute path in the server's file system, or one starting
  with ``~/`` (in the home directory of the server's user), ``{username}``
  replaced by the user's name; default ``<token_dir>/<name>``.

``token_dir`` (default :data:`DEFAULT_TOKEN_DIR`, ``~/.tokenkeeper/tokens``)
is such a path too. A ``token_dir`` or ``path`` must be the user's own: it
starts with ``~/`` or holds ``{username}``, so that servers of different
users that share a file system (a shared ``/tmp``, a volume mounted into
every server) never share a file. With ``token_paths_per_user=True`` the
admin says each server has a file system of its own, and paths without
``{username}`` are accepted.

A server gets ``TOKENKEEPER_TOKEN_FILES`` (the spec as JSON, paths
expanded) and ``TOKENKEEPER_TOKEN_FILE_<NAME>`` (each file's path; the name
in capitals; the server expands a leading ``~/``).
"""

import json
import posixpath
import re

__all__ = ["DEFAULT_TOKEN_DIR", "FORMATS", "SPEC_VARIABLE", "check_token_dir", "normalize_token_files",
           "token_file_environment"]

# DEFAULT_TOKEN_DIR is where token files go unless their path says otherwise:
# a directory in the home directory of the server's user, which the server
# makes with mode 0700. A home directory is the user's alone, unlike a
# shared /tmp, where another user could take the path first; the server
# expands the ~.
DEFAULT_TOKEN_DIR = "~/.tokenkeeper/tokens"

# SPEC_VARIABLE holds the files' spec in the server's environment; each
# file's path is in PATH_PREFIX + its name in capitals.
SPEC_VARIABLE = "TOKENKEEPER_TOKEN_FILES"
PATH_PREFIX = "TOKENKEEPER_TOKEN_FILE_"

FORMATS = ("raw", "json", "header")

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_KEYS = {"path", "format", "audience", "idp"}
_SAMPLE_USER, _OTHER_USER = "user", "other"


def check_token_dir(token_dir, token_paths_per_user=False):
    """Raise ValueError if ``token_dir`` is not a path template (see the module) of the user's own.

    Without ``token_paths_per_user`` it must start with ``~/`` or hold
    ``{username}``.
    """
    if not isinstance(token_dir, str):
        raise ValueError(f"tokenkeeper: token_dir {token_dir!r} must be a string")
    problem = _path_problem(_default_path(token_dir, "name"), token_paths_per_user)
    if problem:
        raise ValueError(f"tokenkeeper: token_dir {token_dir!r} {problem}")


def normalize_token_files(token_files, token_dir=DEFAULT_TOKEN_DIR, token_paths_per_user=False):
    """Return ``token_files`` with every file's ``format`` and ``path`` filled in.

    Raises ValueError naming every problem: a ``token_dir`` that
    :func:`check_token_dir` refuses, a name that is not a lower-case letter
    followed by up to 31 lower-case letters, digits or ``_``, an unknown
    setting, a format other than ``raw``, ``json`` or ``header``, both
    ``audience`` and ``idp``, a path that is not absolute and normalised
    (or ``~/`` and a normalised path) or has a placeholder other than
    ``{username}``, a path without ``{username}`` or ``~/`` (unless
    ``token_paths_per_user``), or two files with one path.
    """
    check_token_dir(token_dir, token_paths_per_user)
    if not isinstance(token_files, dict):
        raise ValueError(f"tokenkeeper: token_files must be a dict from file names to their settings, "
                         f"not {type(token_files).__name__}")
    out, problems = {}, []
    for name, settings in token_files.items():
        settings = {} if settings is None else settings
        found = list(_problems(name, settings, token_dir, token_paths_per_user))
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


def _problems(name, settings, token_dir, per_user):
    """Yield what is wrong with one token file's name and settings."""
    if not isinstance(name, str) or not _NAME.match(name):
        yield "a name is a lower-case letter, then up to 31 lower-case letters, digits or '_'"
    if not isinstance(settings, dict):
        yield "settings must be a dict"
        return
    for key in sorted(set(settings) - _KEYS, key=str):
        yield f"unknown setting {key!r} (want path, format, audience or idp)"
    path = settings.get("path", _default_path(token_dir, name))
    problem = _path_problem(path, per_user) if isinstance(path, str) else "must be a string"
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


def _path_problem(template, per_user):
    """Return what is wrong with a path template, or None."""
    try:
        path = template.format(username=_SAMPLE_USER)
        users_own = template.format(username=_OTHER_USER) != path
    except (KeyError, IndexError, ValueError) as e:
        return f"has a placeholder other than {{username}} or a stray brace ({e})"
    in_home = path.startswith("~/")
    below = path[1:] if in_home else path
    if "\0" in path or not posixpath.isabs(below) or posixpath.normpath(below) != below or below == "/":
        return "must be absolute and normalised, or ~/ and a normalised path"
    if not (in_home or users_own or per_user):
        return ("holds no {username} and is not in the home directory (~/): servers of different users "
                "that share a file system would share it; put {username} in it, or set "
                "token_paths_per_user=True if each server has a file system of its own")
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
