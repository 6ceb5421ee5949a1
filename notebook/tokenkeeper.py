"""Fresh Keycloak access tokens inside a JupyterHub single-user server.

Standard library only. Copy this file next to your notebook or install it in
the server image, then::

    from tokenkeeper import get_token
    headers = {"Authorization": f"Bearer {get_token()}"}

The server's own JupyterHub token (``JUPYTERHUB_API_TOKEN``) authenticates the
call; tokenkeeper's URL comes from ``TOKENKEEPER_URL``, which the hub's
pre-spawn hook sets. Only access tokens are ever returned, never refresh
tokens.
"""

import json
import os
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["get_token", "LoginRequired", "TokenkeeperError"]


class TokenkeeperError(RuntimeError):
    """tokenkeeper could not provide a token."""


class LoginRequired(TokenkeeperError):
    """The user's Keycloak session has ended: log in to JupyterHub again."""


def get_token(min_valid=60, url=None, hub_token=None, timeout=30):
    """Return an access token with at least ``min_valid`` seconds left."""
    base = (url or os.environ.get("TOKENKEEPER_URL") or "").rstrip("/")
    token = hub_token or os.environ.get("JUPYTERHUB_API_TOKEN")
    if not base or not token:
        raise TokenkeeperError("TOKENKEEPER_URL and JUPYTERHUB_API_TOKEN must be set (run inside a JupyterHub server)")
    query = urllib.parse.urlencode({"min_valid": int(min_valid)})
    req = urllib.request.Request(f"{base}/fresh-token?{query}", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)["access_token"]
    except urllib.error.HTTPError as e:
        message = _message(e)
        if e.code == 409:
            raise LoginRequired(message) from None
        raise TokenkeeperError(f"HTTP {e.code}: {message}") from None


def _message(e):
    try:
        return json.load(e)["message"]
    except Exception:
        return e.reason


if __name__ == "__main__":
    print(get_token())
