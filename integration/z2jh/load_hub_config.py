"""Load the hub configuration a rendered Zero to JupyterHub chart gives, as the hub pod would.

Usage: python load_hub_config.py RENDERED.yaml CHART_DIR WORK_DIR

Lays out the hub ConfigMap's and Secret's keys the way the hub pod mounts
them, runs the chart's own files/hub/jupyterhub_config.py (and z2jh.py,
pointed at WORK_DIR instead of /usr/local/etc/jupyterhub) with JupyterHub's
config loader, and prints JSON: the rendered objects by kind and name, the
chart's Secret decoded, the configuration the hub ends up with, and the
URLs tokenkeeper's pre-spawn hook asks and gives servers. Only
kubernetes_asyncio and tornado's curl client (pycurl), which the hub image has and the test
environment need not, are stood in for.
"""

import base64
import contextlib
import json
import os
import shutil
import sys
import types

import yaml
from traitlets.config import PyFileConfigLoader


def stand_ins():
    """Modules the chart's config imports that only matter inside the real hub image."""
    k8s = types.ModuleType("kubernetes_asyncio")
    client = types.ModuleType("kubernetes_asyncio.client")

    class Model(dict):
        def __init__(self, **kwargs):
            super().__init__(kwargs)

    for name in ("V1Container", "V1SecurityContext", "V1Capabilities"):
        setattr(client, name, type(name, (Model,), {}))
    k8s.client = client
    # The chart configures tornado's curl client, which needs pycurl.
    from tornado.simple_httpclient import SimpleAsyncHTTPClient

    curl = types.ModuleType("tornado.curl_httpclient")
    curl.CurlAsyncHTTPClient = type("CurlAsyncHTTPClient", (SimpleAsyncHTTPClient,), {})
    sys.modules.update({"kubernetes_asyncio": k8s, "kubernetes_asyncio.client": client,
                        "tornado.curl_httpclient": curl})


def lay_out(objects, chart, work):
    """Write the hub pod's mounted files under work/etc; return that directory."""
    etc = os.path.join(work, "etc")
    for sub in ("config", "secret"):
        os.makedirs(os.path.join(etc, sub), exist_ok=True)
    for key, value in objects["ConfigMap"]["hub"]["data"].items():
        with open(os.path.join(etc, "config", key), "w") as f:
            f.write(value)
    for key, value in objects["Secret"]["hub"]["data"].items():
        with open(os.path.join(etc, "secret", key), "wb") as f:
            f.write(base64.b64decode(value))
    shutil.copy(os.path.join(chart, "files", "hub", "jupyterhub_config.py"), etc)
    with open(os.path.join(chart, "files", "hub", "z2jh.py")) as f:
        z2jh = f.read().replace("/usr/local/etc/jupyterhub", etc)
    with open(os.path.join(etc, "z2jh.py"), "w") as f:
        f.write(z2jh)
    return etc


def stand_in(ref):
    """Return the stand-in for a Secret's key: its name and key, padded to the 32 characters a spawn secret needs."""
    return f"<{ref['name']}/{ref['key']}>".ljust(32, "-")


def hub_env(objects):
    """Set the variables the hub container gets that the chart's config reads."""
    os.environ.update({"POD_NAMESPACE": "default", "HUB_SERVICE_PORT": "8081", "PROXY_API_SERVICE_PORT": "8001",
                       "PROXY_PUBLIC_SERVICE_PORT": "80"})
    # hub.extraEnv values read from Secrets the cluster would hold.
    for container in objects["Deployment"]["hub"]["spec"]["template"]["spec"]["containers"]:
        if container["name"] == "hub":
            for e in container.get("env", []):
                if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                    ref = e["valueFrom"]["secretKeyRef"]
                    os.environ.setdefault(e["name"], stand_in(ref))


def plain(value):
    """Return value as JSON-able data: callables become their qualified names."""
    if callable(value):
        return f"<callable {getattr(value, '__qualname__', type(value).__name__)}>"
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = [plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set) else items
    if hasattr(value, "to_dict"):  # a LazyConfigValue: what it adds
        return {"lazy": plain(value.to_dict())}
    return value


def main(rendered, chart, work):
    objects = {}
    with open(rendered) as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                objects.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    stand_ins()
    etc = lay_out(objects, chart, work)
    hub_env(objects)
    with contextlib.redirect_stdout(sys.stderr):  # the chart's config prints what it loads
        c = PyFileConfigLoader("jupyterhub_config.py", path=etc).load_config()
    secret = {k: base64.b64decode(v).decode() for k, v in objects["Secret"]["hub"]["data"].items()
              if k != "values.yaml"}
    hook = c.Spawner.get("pre_spawn_hook")
    urls = {"hook_url": getattr(hook, "service_url", None), "notebook_url": getattr(hook, "notebook_url", None),
            "sends_spawn_secret": getattr(hook, "sends_spawn_secret", None)}
    json.dump({"objects": objects, "secret": secret, "tokenkeeper": urls,
               "config": {section: plain(dict(c[section])) for section in c}}, sys.stdout, indent=1, default=str)


if __name__ == "__main__":
    main(*sys.argv[1:])
