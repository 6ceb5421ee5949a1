"""JupyterHub configuration for tokenkeeper.

Install this package's wheel into the hub's environment (``make wheels`` in
the repository builds it; ``pip install tokenkeeper_hub-*.whl``) and call
:func:`configure` from ``jupyterhub_config.py``, after your own roles and
hooks::

    import os
    import tokenkeeper_hub

    tokenkeeper_hub.configure(
        c,
        command=["/usr/local/bin/tokenkeeper"],
        url="http://127.0.0.1:10101",
        environment={
            "TOKENKEEPER_ISSUER_URL": "https://keycloak.example.org/realms/jupyter",
            "TOKENKEEPER_CLIENT_ID": "jupyterhub",
            "TOKENKEEPER_CLIENT_SECRET": os.environ["OAUTH_CLIENT_SECRET"],
            "TOKENKEEPER_STATE_KEY": os.environ["TOKENKEEPER_STATE_KEY"],
        },
    )

It registers tokenkeeper as a service with the least privileges it needs,
defines tokenkeeper's custom scopes, lets users' and servers' tokens call it
(extending the ``user`` and ``server`` roles), and installs three hooks,
chained with any the configuration already has: a ``pre_spawn_hook`` that
puts a fresh access token into each server's environment (asking with the
server's own token, so no hub token exists that can read every user's
token), a ``refresh_user_hook`` that makes tokenkeeper the only party that
spends non-admin users' refresh tokens (two refreshers racing on one refresh
token end the Keycloak session when refresh-token rotation is on), and a
``post_auth_hook`` that refuses a login without a refresh token. With
``token_files`` the pre-spawn hook also tells each server which token files
to keep fresh. The service's page is listed in the hub's Services menu;
who may see every user's session there is up to the admin
(:func:`page_admin_role`).

It works with JupyterHub 5 and 6 and OAuthenticator 17.3 or later.
"""

import os
import secrets
from urllib.parse import quote, urlsplit, urlunsplit

from traitlets.config import Config

from .hooks import (
    CLOCK_LEEWAY,
    RETRY_FOR,
    SPAWN_SECRET_HEADER,
    TokenkeeperUnreachable,
    chain_post_auth_hooks,
    chain_pre_spawn_hooks,
    chain_refresh_user_hooks,
    make_post_auth_hook,
    make_pre_spawn_hook,
    make_refresh_user_hook,
    refresh_expiry,
    refresh_user_hook,
)
from .roles import (
    CUSTOM_SCOPES,
    PAGE_SCOPES,
    SCOPE_GUARD,
    SCOPE_SERVICE_ACCOUNT,
    SCOPE_SESSIONS,
    SCOPE_TOKENS,
    access_scope,
    configured_entries,
    extend_role,
    extend_server_token_scopes,
    page_admin_role,
    service_roles,
)
from .sidecar import check_sidecar, sidecar_problems
from .tokenfiles import DEFAULT_TOKEN_DIR, normalize_token_files, token_file_environment

__version__ = "0.1.0"

# SPAWN_SECRET_ENV names the spawn secret in the hub's environment and in
# tokenkeeper's.
SPAWN_SECRET_ENV = "TOKENKEEPER_SPAWN_SECRET"

__all__ = [
    "CLOCK_LEEWAY", "CUSTOM_SCOPES", "DEFAULT_TOKEN_DIR", "PAGE_SCOPES", "RETRY_FOR", "SCOPE_GUARD",
    "SCOPE_SERVICE_ACCOUNT", "SCOPE_SESSIONS", "SCOPE_TOKENS", "SPAWN_SECRET_ENV", "SPAWN_SECRET_HEADER",
    "TokenkeeperUnreachable", "access_scope", "base_url", "chain_post_auth_hooks", "chain_pre_spawn_hooks",
    "chain_refresh_user_hooks", "check_sidecar", "configure", "install_hook", "make_post_auth_hook",
    "make_pre_spawn_hook", "make_refresh_user_hook", "normalize_token_files", "page_admin_role", "refresh_expiry",
    "refresh_user_hook", "service_prefix", "service_roles", "sidecar_problems", "token_file_environment",
]


def configure(c, *, url, command=None, environment=None, api_token=None, name="tokenkeeper",
              hook_url=None, notebook_url=None, env_name="KEYCLOAK_ACCESS_TOKEN", spawn_min_valid=300,
              revoke_tokens=False, stop_servers=False, refresh_admins=False, spawn_requires_token=True,
              token_files=None, token_dir=DEFAULT_TOKEN_DIR, token_paths_per_user=False, sidecar=None,
              spawn_secret=None):
    """Configure JupyterHub ``c`` to run tokenkeeper and use it.

    ``url`` is where the hub and its proxy reach the service. With
    ``command`` the hub starts it (a managed service) and passes it
    ``environment``, its settings (a managed service does not inherit the
    hub's environment). Without ``command`` tokenkeeper runs on its own (a
    sidecar, a system service) with its settings in its own environment,
    and the service needs a hub token: ``api_token``, or the one of a
    service entry of the same ``name`` already configured (as Zero to
    JupyterHub's ``hub.services`` makes). An entry of that name already
    configured is completed, not duplicated.

    The entry lists tokenkeeper's page in the hub's Services menu
    (``display``), without a confirmation page at log-in
    (``oauth_no_confirm``), and lets the hub OAuth tokens of the page carry
    :data:`SCOPE_SESSIONS` and :data:`SCOPE_GUARD` for users who hold them
    (``oauth_client_allowed_scopes``); nobody holds them by default: grant
    them on purpose, say with :func:`page_admin_role`. ``display`` and
    ``oauth_no_confirm`` already in the entry are kept.

    ``revoke_tokens``, ``stop_servers`` and ``refresh_admins`` set both the
    service's role and, for a managed service, its
    ``TOKENKEEPER_REVOKE_TOKENS``, ``TOKENKEEPER_STOP_SERVERS`` and
    ``TOKENKEEPER_REFRESH_ADMINS`` (set them to match in a sidecar's
    environment). ``revoke_tokens`` gives tokenkeeper the ``tokens`` scope,
    which also creates hub tokens for any user, hub admins included: see
    :func:`service_roles`.

    ``refresh_admins`` makes tokenkeeper refresh hub admins too. JupyterHub
    lets only an admin write an admin's auth_state, so tokenkeeper's service
    then gets the ``admin`` role: every scope, including creating tokens for
    anyone, starting and stopping every server, and changing roles. Whoever
    holds tokenkeeper's hub token then owns the hub. JupyterHub keeps role
    memberships in its database: turning this off again does not take the
    role away (see docs/configuration.md, "Scopes and roles").

    The pre-spawn hook asks the service at ``hook_url`` (default ``url``;
    the hub's own address for the service, such as ``http://127.0.0.1:10101``
    for a sidecar) for a token with ``spawn_min_valid`` seconds left, puts it
    into ``env_name`` and tells the server to ask ``notebook_url`` later
    (``TOKENKEEPER_URL``; default the hook's URL). The hook's URL is
    ``hook_url`` followed by the service's prefix,
    ``{c.JupyterHub.base_url}services/{name}/`` (set ``base_url``, or
    ``bind_url`` with its path, before calling ``configure``);
    ``notebook_url`` gets the prefix too when it names only an origin, such
    as ``http://hub:10101``, and is used as given when it has a path.
    It authenticates with each server's own token, which needs
    ``access:services!service=<name>``: the ``server`` role is extended with
    it (and ``c.Spawner.server_token_scopes``, if set). So is the ``user``
    role, so that users' own tokens may call tokenkeeper too.

    ``spawn_secret`` is what the pre-spawn hook proves itself with: it
    sends it with the spawning user's name, and tokenkeeper serves that
    user's access token without a hub lookup of the server's token (those
    lookups have a small, bounded share of the hub's requests, which callers
    sending made-up tokens can fill). It grants one thing: a user's own
    access token from ``fresh-token``. Default: ``TOKENKEEPER_SPAWN_SECRET``
    of the hub's environment, else, for a managed service, a new random one
    at each hub start. A managed service gets it as
    ``TOKENKEEPER_SPAWN_SECRET``; a service without ``command`` (a sidecar)
    must be given the same value in its own environment (Zero to
    JupyterHub: both containers read it from one Secret), and gets none made
    up: without a secret given, the hook asks with the server's token alone.

    ``token_files`` asks each server to keep token files fresh (the
    notebook package's Jupyter server extension does), one per token: the
    user's own, one per audience, one per identity provider, each in the
    format the admin chooses, in ``token_dir`` (default
    ``~/.tokenkeeper/tokens``, in the home directory of the server's user)
    unless it names its own path. The pre-spawn hook puts the spec into
    ``TOKENKEEPER_TOKEN_FILES`` and each file's path into
    ``TOKENKEEPER_TOKEN_FILE_<NAME>``. It is a dict from file names to
    settings (see :mod:`tokenkeeper_hub.tokenfiles`), or a function of the
    spawner returning one or None. For example
    ``{"base": {}, "trino": {"audience": "trino", "format": "json"}}``.
    ``token_dir`` and each file's path must start with ``~/`` or hold
    ``{username}`` (say ``/srv/tokens/{username}``), so that users whose
    servers share a file system never share a file;
    ``token_paths_per_user=True`` accepts them without, where each server
    has a file system of its own. The server refuses a directory that is a
    symlink, belongs to another user, or that group or others may write to.

    ``sidecar`` is the Kubernetes container spec of a tokenkeeper sidecar, or
    a list of containers holding it (Zero to JupyterHub's
    ``get_config("hub.extraContainers")``): its ``JUPYTERHUB_BASE_URL`` (or
    ``JUPYTERHUB_SERVICE_PREFIX`` and hub API URL) and its probes' paths must
    agree with ``c.JupyterHub.base_url``, else ``configure`` raises
    ValueError saying what to set (see :func:`check_sidecar`).

    Existing ``pre_spawn_hook``, ``refresh_user_hook`` and ``post_auth_hook``
    settings are chained with tokenkeeper's (see :func:`install_hook`); call
    ``configure`` after setting them and after defining your roles.
    """
    access = access_scope(name)
    if sidecar is not None:
        check_sidecar(base_url(c), sidecar, name)
    spawn_secret = _spawn_secret(spawn_secret, command, environment)
    _add_service(c, name, url, command, environment, api_token, refresh_admins,
                 {"TOKENKEEPER_REVOKE_TOKENS": ("revoke_tokens", revoke_tokens),
                  "TOKENKEEPER_STOP_SERVERS": ("stop_servers", stop_servers),
                  "TOKENKEEPER_REFRESH_ADMINS": ("refresh_admins", refresh_admins)},
                 spawn_secret)
    c.JupyterHub.custom_scopes.update(CUSTOM_SCOPES)
    c.JupyterHub.load_roles.extend(service_roles(name, revoke_tokens=revoke_tokens, stop_servers=stop_servers))
    extend_role(c, "server", access)
    extend_role(c, "user", access)
    extend_server_token_scopes(c, access)
    prefix = service_prefix(c, name)
    service_url = (hook_url or url).rstrip("/") + prefix
    install_hook(c, "Spawner", "pre_spawn_hook", make_pre_spawn_hook(
        service_url, env_name=env_name, notebook_url=notebook_url and _under_prefix(notebook_url, prefix),
        min_valid=spawn_min_valid,
        required=spawn_requires_token, token_files=token_files, token_dir=token_dir,
        token_paths_per_user=token_paths_per_user, spawn_secret=spawn_secret,
    ), chain_pre_spawn_hooks)
    install_hook(c, "OAuthenticator", "refresh_user_hook", make_refresh_user_hook(refresh_admins),
                 chain_refresh_user_hooks)
    install_hook(c, "Authenticator", "post_auth_hook", make_post_auth_hook(), chain_post_auth_hooks)
    c.OAuthenticator.enable_auth_state = True


def base_url(c):
    """Return the hub's base URL as JupyterHub normalizes it (default ``/``).

    It is ``c.JupyterHub.base_url``, or else the path of
    ``c.JupyterHub.bind_url``, which sets the base URL too.
    """
    base = c.JupyterHub.get("base_url")
    bind = c.JupyterHub.get("bind_url")
    if not base and isinstance(bind, str) and bind:
        base = urlsplit(bind).path
    base = base or "/"
    if not isinstance(base, str):
        raise ValueError(f"tokenkeeper: c.JupyterHub.base_url = {base!r} is not a string")
    return "/" + base.strip("/") + "/" if base.strip("/") else "/"


def service_prefix(c, name="tokenkeeper"):
    """Return the path under which the hub's proxy routes service ``name``: ``{base_url}services/{name}/``.

    It is the ``JUPYTERHUB_SERVICE_PREFIX`` JupyterHub gives a managed
    service, and the one tokenkeeper derives from ``JUPYTERHUB_BASE_URL``
    when it runs outside the hub.
    """
    return f"{base_url(c)}services/{quote(name)}/"


def _under_prefix(url, prefix):
    """Return ``url`` with ``prefix`` as its path when it names only an origin, else ``url`` as given."""
    parts = urlsplit(url)
    if parts.path.strip("/") or parts.query or parts.fragment:
        return url
    return urlunsplit((parts.scheme, parts.netloc, prefix, "", ""))


# MIN_SPAWN_SECRET is the fewest characters tokenkeeper accepts in a spawn secret.
MIN_SPAWN_SECRET = 32


def _spawn_secret(given, command, environment):
    """Return the spawn secret: ``given``, else the hub's ``TOKENKEEPER_SPAWN_SECRET``, else for a
    managed service (``command``) a new one, else None.

    A different value in a managed service's ``environment`` is an error, as
    is one shorter than tokenkeeper accepts.
    """
    secret = given or os.environ.get(SPAWN_SECRET_ENV) or (environment or {}).get(SPAWN_SECRET_ENV)
    if not secret and command:
        secret = secrets.token_urlsafe(32)
    if not secret:
        return None
    if not isinstance(secret, str) or len(secret) < MIN_SPAWN_SECRET:
        raise ValueError(f"tokenkeeper: the spawn secret must be a string of at least {MIN_SPAWN_SECRET} characters "
                         "(say secrets.token_urlsafe(32) or `openssl rand -hex 32`)")
    theirs = (environment or {}).get(SPAWN_SECRET_ENV)
    if command and theirs is not None and theirs != secret:
        raise ValueError(f"tokenkeeper: environment {SPAWN_SECRET_ENV} differs from the spawn secret "
                         "configure() uses (spawn_secret=, or the hub's environment); set one of them only")
    return secret


def _add_service(c, name, url, command, environment, api_token, refresh_admins, flags, spawn_secret=None):
    """Add tokenkeeper's service entry to ``c``, or complete the one of that name already there.

    A managed service gets ``spawn_secret`` in its environment.
    """
    service = next((s for s in configured_entries(c.JupyterHub.services) if s.get("name") == name), None)
    if service is None:
        service = {"name": name}
        c.JupyterHub.services.append(service)
    if service.get("url", url) != url:
        raise ValueError(f"tokenkeeper: service {name!r} is already configured with url {service['url']!r}, not {url!r}")
    service["url"] = url
    _add_page(service)
    if api_token:
        service["api_token"] = api_token
    if command:
        env = {**service.get("environment", {}), **(environment or {})}
        for key, (option, value) in flags.items():
            _bool_env(env, key, option, value)
        if spawn_secret:
            env[SPAWN_SECRET_ENV] = spawn_secret
        service.update(command=list(command), environment=env)
    elif environment:
        raise ValueError("tokenkeeper: environment is passed only to a managed service (with command); "
                         "set it in the environment of the process that runs tokenkeeper")
    elif not service.get("api_token"):
        raise ValueError(f"tokenkeeper: service {name!r} runs outside the hub (no command) "
                         "and needs an api_token (or a service entry with one)")
    if refresh_admins:
        # The service's admin flag puts it into the admin role and leaves the
        # role's other members alone. (An admin role in load_roles would make
        # the role's user list exactly c.Authenticator.admin_users, dropping
        # admins made in the admin page.)
        service["admin"] = True


def _add_page(service):
    """Let the service entry be tokenkeeper's page: listed in the hub's Services menu, a hub OAuth
    client whose tokens may carry :data:`PAGE_SCOPES`, without a confirmation page.

    JupyterHub gives a user's token only the scopes of ``PAGE_SCOPES`` the
    user holds and leaves out the rest (logging a warning), so a user
    holding neither gets a token that identifies them and nothing more.
    It shows a service's users a page asking them to confirm its access
    unless the service has ``oauth_no_confirm`` (or the user confirmed those
    scopes before): tokenkeeper is the admin's own service. An admin's own
    ``display`` or ``oauth_no_confirm`` in the entry is kept.
    """
    service.setdefault("display", True)
    service.setdefault("oauth_no_confirm", True)
    allowed = list(service.get("oauth_client_allowed_scopes") or [])
    service["oauth_client_allowed_scopes"] = allowed + [s for s in PAGE_SCOPES if s not in allowed]


def install_hook(c, base, name, ours, chain):
    """Set hook ``name`` of class section ``base`` to ``ours``, chained with any already configured.

    A hook may be configured on ``base`` or on a subclass's section (say
    ``c.KubeSpawner.pre_spawn_hook`` or ``c.GenericOAuthenticator.
    refresh_user_hook``), and the most specific one wins. So every section
    that sets ``name`` gets ``chain(theirs, ours)`` in its place, and
    ``base`` gets ``ours`` unless it had its own: whichever section wins,
    tokenkeeper's hook runs once, after the admin's.
    """
    chained_base = False
    for section in list(c.keys()):
        settings = c[section]
        if isinstance(settings, Config) and name in settings and settings[name] is not None:
            settings[name] = chain(settings[name], ours)
            chained_base = chained_base or section == base
    if not chained_base:
        c[base][name] = ours


# _BOOLS are the spellings tokenkeeper's configuration accepts (Go's strconv.ParseBool).
_BOOLS = {**dict.fromkeys(["1", "t", "T", "TRUE", "true", "True"], True),
          **dict.fromkeys(["0", "f", "F", "FALSE", "false", "False"], False)}


def _bool_env(environment, key, option, value):
    """Set ``environment[key]`` to configure()'s ``option``; refuse a contradicting value already there."""
    given = environment.get(key)
    if given is not None:
        parsed = _BOOLS.get(str(given))
        if parsed is None:
            raise ValueError(f"tokenkeeper: environment {key}={given!r} is not a boolean")
        if parsed != value:
            raise ValueError(
                f"tokenkeeper: environment {key}={given!r} contradicts configure({option}={value}); "
                f"set {option} only"
            )
    environment[key] = "true" if value else "false"


