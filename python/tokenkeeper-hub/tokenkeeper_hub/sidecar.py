"""Checks of a tokenkeeper sidecar's settings against the hub's base URL.

A sidecar (say in Zero to JupyterHub's hub pod, ``hub.extraContainers``)
gets its settings from its container's environment, which the chart does
not derive from ``hub.baseUrl``. :func:`check_sidecar` compares them with
``c.JupyterHub.base_url`` when the hub starts, so that a base URL changed in
one place only stops the hub with a message naming what to change, instead
of failing every spawn with 404.
"""

from urllib.parse import quote, urlsplit

# The hub's port inside its pod, which a sidecar's default API URL names.
HUB_PORT = 8081


def _normalize(base):
    """Return base URL ``base`` with a leading and a trailing slash, as JupyterHub and tokenkeeper make it."""
    base = base.strip("/")
    return f"/{base}/" if base else "/"


def _container(containers, name):
    """Return the container of ``containers`` that runs service ``name`` (its
    ``JUPYTERHUB_SERVICE_NAME``, else its own name), or None."""
    if isinstance(containers, dict):
        containers = [containers]
    for container in containers or []:
        if isinstance(container, dict) and _plain_env(container).get("JUPYTERHUB_SERVICE_NAME", container.get("name")) == name:
            return container
    return None


def _plain_env(container):
    """Return a container's environment variables that have plain values."""
    return {e["name"]: str(e["value"]) for e in container.get("env") or []
            if isinstance(e, dict) and "name" in e and "value" in e}


def sidecar_problems(base_url, containers, name="tokenkeeper"):
    """Return what in the sidecar among ``containers`` disagrees with the hub's ``base_url`` (a list of messages).

    ``containers`` is a list of Kubernetes container specs (as in
    ``hub.extraContainers``) or one. The sidecar is the container whose
    ``JUPYTERHUB_SERVICE_NAME`` is ``name`` (or, without that variable, the
    container named ``name``). Its prefix (``JUPYTERHUB_SERVICE_PREFIX``,
    else derived from ``JUPYTERHUB_BASE_URL`` as tokenkeeper derives it),
    its hub API URL (``TOKENKEEPER_HUB_API_URL``, ``JUPYTERHUB_API_URL``,
    else derived) and its probes' paths must all be under ``base_url``.
    """
    base = _normalize(base_url or "/")
    want_prefix = f"{base}services/{quote(name)}/"
    container = _container(containers, name)
    if container is None:
        return [f"no sidecar container runs service {name!r} (JUPYTERHUB_SERVICE_NAME={name})"]
    env = _plain_env(container)
    own_base = _normalize(env["JUPYTERHUB_BASE_URL"]) if "JUPYTERHUB_BASE_URL" in env else "/"
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or f"{own_base}services/{quote(name)}/"
    api_url = (env.get("TOKENKEEPER_HUB_API_URL") or env.get("JUPYTERHUB_API_URL")
               or f"http://127.0.0.1:{HUB_PORT}{own_base}hub/api")
    problems = []
    if prefix != want_prefix:
        where = ("JUPYTERHUB_SERVICE_PREFIX" if "JUPYTERHUB_SERVICE_PREFIX" in env
                 else f"JUPYTERHUB_BASE_URL {own_base!r}")
        problems.append(f"the sidecar serves under {prefix!r} (from its {where}), but the hub routes "
                        f"{want_prefix!r} to it: set its JUPYTERHUB_BASE_URL to {base!r}")
    if urlsplit(api_url).path.rstrip("/") != f"{base}hub/api":
        problems.append(f"the sidecar asks the hub's API at {api_url!r}, not under {base}hub/api: "
                        f"set its JUPYTERHUB_BASE_URL to {base!r}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = ((container.get(probe) or {}).get("httpGet") or {}).get("path")
        if path is not None and not path.startswith(want_prefix):
            problems.append(f"the sidecar's {probe} asks {path!r}, which is not under {want_prefix!r}: "
                            f"set its path to {want_prefix!r}")
    return problems


def check_sidecar(base_url, containers, name="tokenkeeper"):
    """Raise ValueError naming every setting of the sidecar that disagrees with ``base_url`` (see :func:`sidecar_problems`)."""
    problems = sidecar_problems(base_url, containers, name)
    if problems:
        raise ValueError(f"tokenkeeper: c.JupyterHub.base_url is {_normalize(base_url or '/')!r}, but "
                         + "; ".join(problems))
