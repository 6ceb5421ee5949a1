"""Token files that stay fresh, for programs that read a token from a file.

The hub (``tokenkeeper_hub.configure(token_files=...)``) puts the files'
spec into the server's environment as ``TOKENKEEPER_TOKEN_FILES``, a JSON
object from each file's name to its settings::

    {"base": {"path": "~/.tokenkeeper/tokens/base", "format": "raw"},
     "trino": {"path": "/srv/tokens/alice/trino", "format": "json", "audience": "trino"}}

and each file's path as ``TOKENKEEPER_TOKEN_FILE_<NAME>``. A path starting
with ``~/`` is in the home directory of the server's user; the keeper
expands it and sets ``TOKENKEEPER_TOKEN_FILE_<NAME>`` to the full path. The
package's Jupyter server extension (:mod:`tokenkeeper.serverextension`)
runs a :class:`Keeper` for that spec inside the server, in a thread of its
own:

- each file holds one token: the user's own (no ``audience`` or ``idp``),
  one exchanged for ``audience``, or the identity provider ``idp``'s;
- a file is rewritten at two thirds of its token's lifetime, by atomic
  rename (a temporary file in the same directory, written, flushed to disk,
  then renamed over the file), so a reader sees the old token or the new
  one, never part of one; files have mode 0600;
- a file's directory is made with mode 0700 if it does not exist. It is
  opened without following a symlink and checked on the open descriptor:
  a symlink, a directory owned by another user, or one that group or
  others may write to is refused (logged, and nothing is written there).
  Every write, rename and removal is relative to that descriptor, temporary
  files are created exclusively and never through a symlink, and a symlink
  at a file's name is replaced, never followed;
- ``format`` is ``raw`` (the token and a newline), ``json`` (``access_token``,
  ``token_type``, ``expires_at``, ``user``, and ``audience`` or ``idp``) or
  ``header`` (``Authorization: Bearer <token>`` and a newline);
- when tokenkeeper answers that the user must log in again (their Keycloak
  session has ended) the file is removed, and every other file is checked
  at once; the keeper keeps asking, backing off up to ten minutes, and
  writes the files again once the user has logged in again. A file whose
  token has expired while tokenkeeper could not be asked (or answered with
  an error) is removed too: a file that exists holds a token that has not
  expired;
- the keeper backs off after every failure: 2 seconds doubling, capped,
  with up to half of each wait left out at random so that servers that
  failed together do not ask together again, never shorter than a
  ``Retry-After`` asks, and never past the expiry of a token a file still
  holds. The cap is a minute for errors, and ten minutes while the user has
  no tokens to serve (409, or 401 for the server's token) or tokenkeeper
  cannot serve one now (503): after a mass logout every running server
  asks, and each ask costs tokenkeeper an identity lookup from its share
  of the hub's request budget. The files of one server wait alike, so they
  ask together and share one lookup;
- the files are removed when the keeper stops (with the server), from the
  directories it checked and wrote to, even if their paths now lead
  elsewhere; files left at those paths by an earlier server are removed
  when it starts;
- the keeper tells tokenkeeper which files the server keeps (their names,
  modes and when they were written, never what they hold) whenever that
  changes: after a write, after a removal, and when it stops
  (:func:`tokenkeeper.keeperapi.report_files`; a report that fails is
  logged at debug level and changes nothing else);
- a second thread waits on tokenkeeper's ``session-end`` (a long poll, up
  to five minutes each) and removes every file as soon as tokenkeeper says
  the user was logged out, however that happened, rather than at the
  files' next refresh; after a failure it waits as the files do (capped at
  ten minutes for 401, 403, 409 and 503, a minute otherwise). A
  tokenkeeper without ``session-end`` (404) is not asked again.
"""

import errno
import json
import logging
import math
import os
import posixpath
import random
import re
import stat
import threading
import time

from . import RETRY_FOR, LoginRequired, TokenkeeperError, _claim, fresh_token
from .keeperapi import EndpointMissing, file_entry, report_files, session_end

__all__ = [
    "FORMATS", "PATH_PREFIX", "SPEC_VARIABLE", "Keeper", "SpecError", "TokenFile", "UnsafeDirectory",
    "open_private_directory", "parse_spec", "render", "start_from_environment", "write_atomically", "write_in",
]

# SPEC_VARIABLE is the environment variable that holds the files' spec; each
# file's path is in PATH_PREFIX + its name in capitals.
SPEC_VARIABLE = "TOKENKEEPER_TOKEN_FILES"
PATH_PREFIX = "TOKENKEEPER_TOKEN_FILE_"

# FORMATS are the file formats: the token alone, JSON with its expiry, or an HTTP header line.
FORMATS = ("raw", "json", "header")

# RETRY_FIRST and RETRY_MAX bound the backoff, in seconds, after a failed refresh.
RETRY_FIRST, RETRY_MAX = 2, 60

# WAIT_MAX caps the backoff, in seconds, while tokenkeeper has no token to
# serve (409: the user's session ended or they have no tokens; 401: the hub
# refuses the server's token) or cannot serve one now (503). Each ask costs
# tokenkeeper an identity lookup of the server's token, from the fifth of
# hub_max_rps that lookups get (5 a second by default), and at most once a
# minute a hub read. After a mass logout every running server asks: 1,000
# servers, each asking for its files together, ask at most 1,000 / 300 ≈
# 3.3 times a second at the cap (the jitter makes each wait 300 to 600 s),
# about 2.2 on average, where a one-minute cap made them ask about 17 times
# a second, over three times the lookups' whole share.
WAIT_MAX = 600

# FIRST_MIN_VALID is what a file's first request asks for, in seconds; later
# requests ask for half the lifetime of the file's last token.
FIRST_MIN_VALID = 60

# SESSION_END_WAIT is how long, in seconds, each session-end request asks
# tokenkeeper to wait for a logout, and SESSION_END_SLACK how much longer
# its socket waits for the answer. SESSION_END_EVERY is the least time
# between two asks: a tokenkeeper that answers at once is not asked in a
# tight loop.
SESSION_END_WAIT, SESSION_END_SLACK, SESSION_END_EVERY = 300, 30, 5

# REPORT_TIMEOUT bounds, in seconds, a report of the server's files, and
# STOP_REPORT_TIMEOUT the last one, sent while the server shuts down.
REPORT_TIMEOUT, STOP_REPORT_TIMEOUT = 10, 2

# WATCHER_JOIN is how long, in seconds, stop waits for the session-end
# thread; a request in flight is left to end with the process (the thread
# is a daemon, and an answer after stop changes nothing).
WATCHER_JOIN = 0.5

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_KEYS = {"path", "format", "audience", "idp"}


class SpecError(ValueError):
    """The token files' spec is not valid; the message lists every problem."""


class TokenFile:
    """One token file: its ``name``, ``path`` and ``format``, and which token (``audience`` or ``idp``)."""

    def __init__(self, name, path, format="raw", audience=None, idp=None):
        self.name, self.path, self.format, self.audience, self.idp = name, path, format, audience, idp

    @property
    def target(self):
        """The keyword arguments of :func:`tokenkeeper.fresh_token` that ask for this file's token."""
        return {k: v for k, v in (("audience", self.audience), ("idp", self.idp)) if v is not None}

    def __repr__(self):
        return f"TokenFile({self.name!r}, {self.path!r}, {self.format!r}, audience={self.audience!r}, idp={self.idp!r})"

    def __eq__(self, other):
        return isinstance(other, TokenFile) and vars(self) == vars(other)


def parse_spec(text):
    """Return the :class:`TokenFile` list of a JSON spec; raise :class:`SpecError` listing every problem."""
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise SpecError(f"not JSON: {e}") from None
    if not isinstance(spec, dict):
        raise SpecError("want a JSON object from file names to their settings")
    files, problems = [], []
    for name, settings in spec.items():
        problems += [f"{name!r}: {p}" for p in _problems(name, settings)]
        if not problems:
            files.append(TokenFile(name, **{**settings, "path": _expand(settings["path"])}))
    paths = [f.path for f in files]
    problems += [f"path {p!r} is given to more than one file" for p in sorted(set(paths)) if paths.count(p) > 1]
    if problems:
        raise SpecError("; ".join(problems))
    return files


def _problems(name, settings):
    """Yield what is wrong with one file's name and settings."""
    if not isinstance(name, str) or not _NAME.match(name):
        yield "a name is a lower-case letter, then up to 31 lower-case letters, digits or '_'"
    if not isinstance(settings, dict):
        yield "settings must be a JSON object"
        return
    for key in sorted(set(settings) - _KEYS):
        yield f"unknown setting {key!r} (want path, format, audience or idp)"
    path = settings.get("path")
    if not _is_path(path):
        yield f"path must be an absolute, normalised path or one that starts with ~/, not {path!r}"
    elif not os.path.isabs(_expand(path)):
        yield f"path {path!r} is in the home directory, and this server has none (HOME is not set)"
    if settings.get("format", "raw") not in FORMATS:
        yield f"format must be one of {', '.join(FORMATS)}, not {settings['format']!r}"
    for key in ("audience", "idp"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            yield f"{key} must be a non-empty string, not {value!r}"
    if settings.get("audience") is not None and settings.get("idp") is not None:
        yield "a file holds a token for an audience or of an identity provider, not both"


def _is_path(path):
    """Whether ``path`` is absolute and normalised, or ``~/`` and a normalised relative path below it."""
    if not isinstance(path, str) or "\0" in path:
        return False
    if path.startswith("~/"):
        path = path[1:]
    return posixpath.isabs(path) and posixpath.normpath(path) == path and path != "/"


def _expand(path):
    """Return ``path`` with a leading ``~/`` replaced by the home directory of the server's user."""
    if not path.startswith("~/"):
        return path
    home = os.path.expanduser("~")
    if not os.path.isabs(home):
        return path
    return posixpath.join(posixpath.normpath(home), path[2:])


def render(file_format, answer):
    """Return a file's content in ``file_format`` for tokenkeeper's fresh-token ``answer``."""
    token = answer["access_token"]
    if file_format == "raw":
        return token + "\n"
    if file_format == "header":
        scheme = answer.get("token_type") or "Bearer"
        return f"Authorization: {'Bearer' if scheme.lower() == 'bearer' else scheme} {token}\n"
    if file_format == "json":
        keys = ("access_token", "token_type", "expires_at", "user", "audience", "idp")
        return json.dumps({k: answer[k] for k in keys if answer.get(k) is not None}, indent=1) + "\n"
    raise ValueError(f"unknown token file format {file_format!r}")


class UnsafeDirectory(OSError):
    """A token file's directory is a symlink, another user's, or others may write to it."""


def write_atomically(path, text):
    """Replace the file at ``path`` by one of mode 0600 holding ``text``, by atomic rename.

    The directory is the one ``path`` names (the caller's choice: it is not
    checked as :func:`open_private_directory` checks the keeper's); see
    :func:`write_in` for how the file is written.
    """
    directory, base = os.path.split(os.path.abspath(path))
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_in(dir_fd, base, text)
    finally:
        os.close(dir_fd)


def write_in(dir_fd, name, text):
    """Replace file ``name`` in the directory open as ``dir_fd`` by one of mode 0600 holding ``text``.

    The text goes to a new temporary file in that directory (created
    exclusively, never through a symlink, mode 0600, checked to be a
    regular file of this user), is flushed to disk, and the file is renamed
    over ``name``: a reader sees the old content or the new, never part. A
    symlink at ``name`` is replaced, never written through. Every step is
    relative to ``dir_fd``, so a directory swapped in at the directory's
    path meanwhile is never written to.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no unused temporary file name", name)
    try:
        with os.fdopen(fd, "w") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise UnsafeDirectory(f"temporary file {tmp} is not a regular file of this user")
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


def open_private_directory(path, create=True):
    """Return a file descriptor of directory ``path``, checked to be private to this user.

    With ``create`` a directory that does not exist is made, mode 0700 (and
    so are missing parents, one by one). The directory is opened without
    following a symlink at ``path``, and checked on the open descriptor: a
    directory owned by this user (its effective user id) that neither group
    nor others may write to. Anything else raises :class:`UnsafeDirectory`
    saying why: whoever may write there, or could point the path elsewhere,
    could read tokens written there, put a token of theirs at a file's path,
    or have files of theirs removed. Without ``create`` a missing directory
    raises FileNotFoundError.
    """
    if create:
        _make_directories(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            what = "a symlink" if os.path.islink(path) else "not a directory"
            raise UnsafeDirectory(f"token directory {path} is {what}: refusing to write tokens there") from None
        raise
    try:
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISDIR(st.st_mode):
            problem = "not a directory"
        elif st.st_uid != os.geteuid():
            problem = f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        if problem:
            raise UnsafeDirectory(f"token directory {path} is {problem}: refusing to write tokens there")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_directories(path):
    """Make ``path`` and its missing parents, each with mode 0700; leave whatever exists alone."""
    missing = []
    while not os.path.lexists(path):  # a dangling symlink exists: opening it is refused
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass


class _Stopped(Exception):
    """The keeper is stopping."""


class _Superseded(Exception):
    """The user's session ended while a file's token was being fetched: the token is not written."""


def _backoff(failures, jitter, cap=RETRY_MAX, retry_after=None):
    """Return the wait after ``failures`` failures in a row, in seconds.

    It is RETRY_FIRST doubling with each failure up to ``cap``, less the
    part ``jitter`` (in [0, 1)) of its half, and at least ``retry_after``
    (up to ``cap``) when tokenkeeper asked for it.
    """
    full = min(cap, RETRY_FIRST * 2 ** min(failures, 32))
    wait = full * (1 - jitter / 2)
    if retry_after is not None:
        wait = max(wait, min(retry_after, cap))
    return wait


class _State:
    """What the keeper knows of one file."""

    def __init__(self, file):
        self.file = file
        self.next_at = 0.0  # when to refresh (time.time() seconds); due at once
        self.expires = None  # when the token in the file expires; None while there is no file
        self.lifetime = None  # the last token's lifetime in seconds
        self.failures = 0  # failed asks in a row

    def min_valid(self):
        """The min_valid to ask for: half the last token's lifetime (what tokenkeeper grants at most)."""
        if self.lifetime is None:
            return FIRST_MIN_VALID
        return min(86400, math.ceil(self.lifetime / 2))

    def retry_later(self, now, jitter, cap=RETRY_MAX, retry_after=None):
        """Schedule a retry after the backoff (never after the file's token expires) and lengthen it.

        The wait is :func:`_backoff`'s after this file's failures in a row,
        with ``jitter(failures)`` its random part.
        """
        self.next_at = now + _backoff(self.failures, jitter(self.failures), cap, retry_after)
        if self.expires is not None:
            self.next_at = min(self.next_at, self.expires)
        self.failures += 1


class Keeper:
    """Keeps token files fresh from tokenkeeper (see the module's documentation).

    ``url`` and ``hub_token`` are tokenkeeper's URL and the server's hub
    token (default ``TOKENKEEPER_URL`` and ``JUPYTERHUB_API_TOKEN``), and
    ``server_name`` the server's name in reports ("" for the user's default
    server; default ``JUPYTERHUB_SERVER_NAME``). ``now`` is the wall clock
    that schedules refreshes; ``clock`` and ``sleep`` pace the retries
    while tokenkeeper refuses connections and the asks for the end of the
    session (default: a sleep that :meth:`stop` ends). ``random`` returns a
    number in [0, 1) (default :func:`random.random`); it is drawn once per
    length of a failure streak, so the keeper's files wait alike and
    servers differ. :meth:`start` runs it in two threads, one refreshing,
    one waiting for the end of the session; tests call :meth:`step` and
    :meth:`watch`.
    """

    def __init__(self, files, url=None, hub_token=None, *, now=time.time, clock=time.monotonic, sleep=None,
                 timeout=30, log=None, random=random.random, server_name=None):
        self._states = [_State(f) for f in files]
        self._url, self._hub_token, self._timeout = url, hub_token, timeout
        if server_name is None:
            server_name = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        self._server_name = server_name
        self._now, self._clock = now, clock
        self._random, self._draws = random, {}
        self._sleep = sleep or self._pause
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards writing and removing files, _stopped, _session and _changed
        self._stopped = False
        self._session = 0  # counts the session ends session-end told of; a token fetched before one is not written
        self._dirs = {}  # each directory written to or removed from: its path's checked descriptor
        self._report_lock = threading.Lock()  # one report at a time, so that they arrive in order
        self._changed = False  # a file was written or removed since the last report tokenkeeper took
        self._thread = self._watcher = None
        self.log = log or logging.getLogger(__name__)

    def start(self):
        """Remove files an earlier server left at the configured paths, and keep the files fresh in a thread.

        A second thread waits for the end of the user's session (:meth:`watch`).
        """
        for st in self._states:
            self._remove(st)
        self._thread = threading.Thread(target=self._run, name="tokenkeeper-token-files", daemon=True)
        self._thread.start()
        self._watcher = threading.Thread(target=self.watch, name="tokenkeeper-session-end", daemon=True)
        self._watcher.start()

    def stop(self, timeout=5):
        """Stop keeping the files and remove them; wait up to ``timeout`` seconds for the thread.

        No file is written after this returns, even by a request still in
        flight. When it removed any, tokenkeeper is told the server keeps
        none (waiting at most STOP_REPORT_TIMEOUT seconds). The thread
        waiting for the end of the session is waited for at most
        WATCHER_JOIN seconds: its request may be a long poll, whose answer
        then changes nothing.
        """
        self._stopping.set()
        with self._lock:
            self._stopped = True
            for st in self._states:
                self._unlink(st)
            for fd in self._dirs.values():
                os.close(fd)
            self._dirs.clear()
        self._report(STOP_REPORT_TIMEOUT)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._watcher is not None:
            self._watcher.join(min(timeout, WATCHER_JOIN))

    def _run(self):
        while not self._stopping.is_set():
            self._stopping.wait(self.step())

    def _pause(self, seconds):
        if self._stopping.wait(seconds):
            raise _Stopped()

    def step(self):
        """Refresh every file that is due, and report the files when any was written or removed; return
        the seconds until the next one is due."""
        for st in self._states:
            if st.next_at <= self._now():
                try:
                    self._refresh(st)
                except _Stopped:
                    return 0.0
                except Exception as e:  # a bug must not end the thread that keeps every file
                    self.log.error("tokenkeeper: token file %s: %r", st.file.name, e, exc_info=True)
                    st.retry_later(self._now(), self._jitter)
        self._report()
        return max(0.0, min(st.next_at for st in self._states) - self._now()) if self._states else 3600.0

    def _refresh(self, st):
        asked = st.min_valid()
        session = self._session
        try:
            answer = fresh_token(asked, self._url, self._hub_token, self._timeout, retry_for=RETRY_FOR,
                                 sleep=self._sleep, clock=self._clock, **st.file.target)
            left = answer.get("expires_in")
            if not isinstance(left, (int, float)) or isinstance(left, bool) or left <= 0:
                raise TokenkeeperError(f"tokenkeeper's answer has no time left on the token (expires_in {left!r})")
            received = self._now()
            self._write(st, answer, session)
        except _Superseded:
            # Fetched before tokenkeeper said the session ended: ask again
            # after a wait, as after a login-required answer.
            st.retry_later(self._now(), self._jitter, WAIT_MAX)
            return
        except LoginRequired as e:
            self._session_ended(st, e)
            return
        except TokenkeeperError as e:
            self._failed(st, e, WAIT_MAX if e.status == 503 else RETRY_MAX, e.retry_after)
            return
        except OSError as e:
            self._failed(st, e, RETRY_MAX)
            return
        if st.failures:
            self._recovered(st, received)
        self._schedule(st, answer, asked, received)

    def _jitter(self, failures):
        """The random part of the wait after ``failures`` failures in a row, the same for each file."""
        level = min(failures, 32)  # the waits are at their cap long before
        if level not in self._draws:
            self._draws[level] = self._random()
        return self._draws[level]

    def _recovered(self, st, now):
        """st's file was written after failures: the files still waiting after failures ask at once.

        The user may have logged in again, or tokenkeeper come back, for
        them too.
        """
        for other in self._states:
            if other is not st and other.failures and other.expires is None:
                other.next_at = min(other.next_at, now)

    def _schedule(self, st, answer, asked, received):
        """Set when to rewrite st's file: at two thirds of its new token's lifetime."""
        left = answer["expires_in"]
        iat, exp = _claim(answer["access_token"], "iat"), _claim(answer["access_token"], "exp")
        lifetime = exp - iat if iat is not None and exp is not None and exp - iat >= left else left
        st.lifetime, st.expires = lifetime, received + left
        due = st.expires - lifetime / 3
        if due > received:
            st.next_at, st.failures = due, 0
        elif asked < st.min_valid():
            st.next_at = received  # asked for too little before the lifetime was known: ask again now
        else:
            # Past two thirds already: tokenkeeper returned the current token
            # (Keycloak unreachable). Try again later, until it expires.
            self.log.warning("tokenkeeper: token file %s holds a token with %s s left; asking again later",
                             st.file.name, left)
            st.retry_later(received, self._jitter)
        self.log.debug("tokenkeeper: token file %s written, next in %.0f s", st.file.name, st.next_at - received)

    def _session_ended(self, st, e):
        now = self._now()
        if st.expires is not None:
            self.log.warning("tokenkeeper: token file %s removed: %s", st.file.name, e)
        else:
            self.log.debug("tokenkeeper: no token file %s: %s", st.file.name, e)
        self._remove(st)
        st.retry_later(now, self._jitter, WAIT_MAX, e.retry_after)
        for other in self._states:
            if other.expires is not None:
                other.next_at = min(other.next_at, now)  # has the session ended for it too?

    def _failed(self, st, e, cap, retry_after=None):
        now = self._now()
        if st.expires is not None and now >= st.expires:
            self.log.warning("tokenkeeper: token file %s removed: its token has expired", st.file.name)
            self._remove(st)
        st.retry_later(now, self._jitter, cap, retry_after)
        self.log.log(logging.ERROR if isinstance(e, UnsafeDirectory) else logging.WARNING,
                     "tokenkeeper: token file %s not refreshed, trying again in %.0f s: %s",
                     st.file.name, st.next_at - now, e)

    def _write(self, st, answer, session):
        """Write st's file from ``answer``, fetched in session ``session`` (see :meth:`_end_session`)."""
        with self._lock:
            if self._stopped:
                raise _Stopped()
            if session != self._session:
                raise _Superseded()
            directory, name = os.path.split(st.file.path)
            write_in(self._directory(directory, create=True), name, render(st.file.format, answer))
            self._changed = True

    def _remove(self, st):
        with self._lock:
            st.expires = None
            if not self._stopped:  # else stop has removed every file
                self._unlink(st)

    # --- reports and the end of the session ----------------------------------------

    def watch(self):
        """Wait for the end of the user's session until the keeper stops; remove the files when it ends.

        It asks tokenkeeper's session-end, each time with the ``since`` of
        the answer before (the first time without), and on an answer that
        the session ended removes every file at once and reports that the
        server keeps none. After a failure it waits as :func:`_backoff` says,
        at most WAIT_MAX for 401, 403, 409 and 503 and RETRY_MAX otherwise,
        never less than a ``Retry-After``. A tokenkeeper without session-end
        (404) is not asked again. :meth:`start` runs this in a thread.
        """
        since, failures = None, 0
        try:
            while not self._stopping.is_set():
                asked = self._clock()
                try:
                    ended, since_next = session_end(self._url, self._hub_token, since, SESSION_END_WAIT,
                                                    timeout=SESSION_END_WAIT + SESSION_END_SLACK)
                except EndpointMissing:
                    self.log.info("tokenkeeper: tokenkeeper has no session-end (an older version): token files "
                                  "are removed when their next refresh finds the session ended")
                    return
                except Exception as e:
                    self._sleep(self._watch_failed(e, failures))
                    failures += 1
                    continue
                failures = 0
                if ended:
                    self._end_session()
                since = since_next
                rest = SESSION_END_EVERY - (self._clock() - asked)
                if rest > 0:
                    self._sleep(rest)
        except _Stopped:
            return

    def _watch_failed(self, e, failures):
        """Log session-end's failure ``e`` after ``failures`` before it; return how long to wait."""
        status = getattr(e, "status", None)
        cap = WAIT_MAX if status in (401, 403, 409, 503) else RETRY_MAX
        wait = _backoff(failures, self._jitter(failures), cap, getattr(e, "retry_after", None))
        if isinstance(e, TokenkeeperError):
            level = logging.INFO if failures == 0 else logging.DEBUG
            self.log.log(level, "tokenkeeper: waiting for the end of the session failed, trying again in %.0f s: %s",
                         wait, e)
        else:  # a bug must not end the thread
            self.log.error("tokenkeeper: waiting for the end of the session: %r", e, exc_info=True)
        return wait

    def _end_session(self):
        """tokenkeeper says the user's session ended: remove every file now and report that.

        A token fetched before this is not written (see :meth:`_write`).
        Each file is asked for again when it is due: after a mass logout
        the servers do not all ask at once.
        """
        with self._lock:
            self._session += 1
        removed = [st.file.name for st in self._states if st.expires is not None]
        for st in self._states:
            self._remove(st)
        if removed:
            self.log.warning("tokenkeeper: token files removed, the user's session has ended: %s", ", ".join(removed))
        self._report()

    def _report(self, timeout=REPORT_TIMEOUT):
        """Tell tokenkeeper which files the server keeps, when any was written or removed since the last
        report it took.

        A failure is logged at debug level, and the report is made again
        at the next step. Waits at most ``timeout`` for a report another
        thread is making.
        """
        if not self._report_lock.acquire(timeout=timeout):
            return
        try:
            with self._lock:
                if not self._changed:
                    return
                self._changed = False
                files = self._present()
            try:
                report_files(self._url, self._hub_token, self._server_name, files, timeout)
            except Exception as e:
                with self._lock:
                    self._changed = True
                self.log.debug("tokenkeeper: token files not reported to tokenkeeper: %s", e)
        finally:
            self._report_lock.release()

    def _present(self):
        """Return the report (:func:`tokenkeeper.keeperapi.file_entry`) of each file there is now; hold _lock."""
        entries = []
        if self._stopped:  # the files are gone, and the directories closed
            return entries
        for st in self._states:
            directory, name = os.path.split(st.file.path)
            fd = self._dirs.get(directory)
            if fd is None:
                continue
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                entries.append(file_entry(name, info))
        return entries

    def _unlink(self, st):
        """Remove st's file by name from its directory's checked descriptor, never through a symlink."""
        directory, name = os.path.split(st.file.path)
        st.expires = None
        fd = self._dirs.get(directory)
        try:
            if fd is None:
                fd = self._directory(directory, create=False)
            os.unlink(name, dir_fd=fd)
            self._changed = True
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log.error("tokenkeeper: token file %s: cannot remove %s: %s", st.file.name, st.file.path, e)

    def _directory(self, path, create):
        """Return the descriptor of directory ``path``, checked now (:func:`open_private_directory`).

        The keeper holds it from the first write or removal on, and removes
        its files through it: a directory put at the path later is never
        written to unless it passes the checks, nor has files removed. When
        another directory that passes them has replaced it, the keeper's
        files are removed from the old one and written again in the new.
        """
        fd = open_private_directory(path, create)
        held = self._dirs.get(path)
        if held is None:
            self._dirs[path] = fd
            return fd
        new, old = os.fstat(fd), os.fstat(held)
        if (new.st_dev, new.st_ino) == (old.st_dev, old.st_ino):
            os.close(fd)
            return held
        now = self._now()
        for other in self._states:
            other_dir, other_name = os.path.split(other.file.path)
            if other_dir == path:
                try:
                    os.unlink(other_name, dir_fd=held)
                except OSError:
                    pass
                other.expires = None
                other.next_at = min(other.next_at, now)
        os.close(held)
        self._dirs[path] = fd
        return fd


def start_from_environment(environ=None, log=None):
    """Start a :class:`Keeper` for the spec in ``TOKENKEEPER_TOKEN_FILES``; return it, or None.

    Reports name the server by ``JUPYTERHUB_SERVER_NAME``. Without the
    variable there is nothing to keep. A spec that is not
    valid, or a server without ``TOKENKEEPER_URL`` and
    ``JUPYTERHUB_API_TOKEN``, is logged as an error and keeps nothing.
    Each ``TOKENKEEPER_TOKEN_FILE_<NAME>`` in ``environ`` is set to its
    file's full path (a path starting with ``~/`` in the spec is expanded
    here), so that the kernels and terminals the server starts see it.
    """
    environ = os.environ if environ is None else environ
    log = log or logging.getLogger(__name__)
    text = environ.get(SPEC_VARIABLE)
    if not text:
        return None
    try:
        files = parse_spec(text)
    except SpecError as e:
        log.error("tokenkeeper: %s is not valid, so no token files are kept: %s", SPEC_VARIABLE, e)
        return None
    if not files:
        return None
    url, hub_token = environ.get("TOKENKEEPER_URL"), environ.get("JUPYTERHUB_API_TOKEN")
    if not url or not hub_token:
        log.error("tokenkeeper: %s is set, but TOKENKEEPER_URL and JUPYTERHUB_API_TOKEN are not, "
                  "so no token files are kept", SPEC_VARIABLE)
        return None
    for f in files:
        environ[PATH_PREFIX + f.name.upper()] = f.path
    keeper = Keeper(files, url, hub_token, log=log, server_name=environ.get("JUPYTERHUB_SERVER_NAME", ""))
    keeper.start()
    log.info("tokenkeeper: keeping token files fresh: %s",
             ", ".join(f"{f.name} ({f.path}, {f.format})" for f in files))
    return keeper
