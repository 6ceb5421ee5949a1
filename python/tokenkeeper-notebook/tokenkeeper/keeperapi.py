"""The token-file keeper's calls to tokenkeeper besides fresh-token.

- ``PUT {url}token-files`` reports the files the server keeps, for the
  user's view on tokenkeeper's page: each file's name (its base name),
  mode and when it was written; never what it holds.
- ``GET {url}session-end?since=...&wait=...`` waits, up to ``wait``
  seconds, for the user to be logged out (by any path) after ``since``,
  so that the keeper removes the files at once rather than at its next
  refresh.

Both send the server's hub token, as fresh-token does, and never follow a
redirect.
"""

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request

from . import TokenkeeperError, _http_error, _opener, _where

__all__ = ["EndpointMissing", "file_entry", "report_files", "session_end"]


class EndpointMissing(TokenkeeperError):
    """tokenkeeper answered 404: it is a version without the endpoint."""


def file_entry(name, st):
    """Return the report of file ``name`` whose ``os.stat`` result is ``st``: its name, mode and when written."""
    return {"name": name, "mode": f"{st.st_mode & 0o777:04o}",
            "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))}


def report_files(url, hub_token, server, files, timeout):
    """Tell tokenkeeper at ``url`` that server ``server`` ("" for the default one) keeps ``files`` now.

    ``files`` are :func:`file_entry` reports; an empty list says the server
    keeps none. Raises :class:`TokenkeeperError` when tokenkeeper does not
    take the report.
    """
    body = json.dumps({"server": server, "files": files}).encode()
    _call(urllib.request.Request(_endpoint(url, "token-files"), data=body, method="PUT", headers={
        "Authorization": f"token {hub_token}", "Content-Type": "application/json"}), timeout)


def session_end(url, hub_token, since, wait, timeout):
    """Wait up to ``wait`` seconds for the end of the user's session; return (ended, since).

    ``ended`` says whether the user was logged out after ``since`` (None:
    after tokenkeeper's now), and ``since`` is what to ask with next.
    ``timeout`` bounds each socket operation and must exceed ``wait``.
    Raises :class:`EndpointMissing` when tokenkeeper has no such endpoint,
    and :class:`TokenkeeperError` (:class:`tokenkeeper.LoginRequired` when
    the hub refuses the server's token) otherwise.
    """
    query = {"wait": int(wait)} if since is None else {"since": since, "wait": int(wait)}
    req = urllib.request.Request(f"{_endpoint(url, 'session-end')}?{urllib.parse.urlencode(query)}",
                                 headers={"Authorization": f"token {hub_token}"})
    try:
        answer = json.loads(_call(req, timeout))
    except ValueError:
        raise TokenkeeperError("tokenkeeper's session-end answer is not JSON") from None
    ended = answer.get("ended") if isinstance(answer, dict) else None
    next_since = answer.get("since") if isinstance(answer, dict) else None
    if not isinstance(ended, bool) or not isinstance(next_since, str) or not next_since:
        raise TokenkeeperError("tokenkeeper's session-end answer lacks ended or since")
    return ended, next_since


def _endpoint(url, name):
    return f"{url.rstrip('/')}/{name}"


def _call(req, timeout):
    """Make one request; return the answer's body, or raise TokenkeeperError (EndpointMissing for 404)."""
    where = _where(req)
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 404:
                raise EndpointMissing(f"tokenkeeper at {where} answered 404", status=404) from None
            raise _http_error(e, {}) from None
    except urllib.error.URLError as e:
        raise TokenkeeperError(f"tokenkeeper at {where}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise TokenkeeperError(f"tokenkeeper at {where}: {e!r}") from None
