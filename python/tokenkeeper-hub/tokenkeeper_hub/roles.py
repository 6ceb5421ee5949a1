"""tokenkeeper's custom scopes and the roles of its service, users and servers."""

from traitlets.config import LazyConfigValue

# SCOPE_TOKENS lets a token ask tokenkeeper for another user's access token
# (and their refresh status). Nothing is granted it by default: a hub admin
# who gives it to a role gives that role every user's Keycloak access token.
SCOPE_TOKENS = "custom:tokenkeeper:tokens"
# SCOPE_SERVICE_ACCOUNT lets a token ask for the service account's token and
# job status.
SCOPE_SERVICE_ACCOUNT = "custom:tokenkeeper:service-account"
# SCOPE_GUARD lets a token release tokenkeeper's mass-failure guard, which
# logs out the users it holds. Nothing is granted it by default: give it, on
# purpose, to the people who check that Keycloak really ended those sessions.
SCOPE_GUARD = "custom:tokenkeeper:guard"
# SCOPE_SESSIONS lets a token see every user's session on tokenkeeper's page,
# refresh it and log the user out everywhere (filtered, ``!user=NAME``, for
# that one user). Nothing is granted it by default, hub admins included:
# being an admin of the hub is not the same as being trusted with every
# user's Keycloak session; give it on purpose (see page_admin_role).
SCOPE_SESSIONS = "custom:tokenkeeper:sessions"

CUSTOM_SCOPES = {
    SCOPE_TOKENS: {
        "description": "Read any user's fresh Keycloak access token from tokenkeeper.",
    },
    SCOPE_SERVICE_ACCOUNT: {
        "description": "Read tokenkeeper's service-account token and job status.",
    },
    SCOPE_GUARD: {
        "description": "Release tokenkeeper's mass-failure guard: log out the users it holds.",
    },
    SCOPE_SESSIONS: {
        "description": "Read every user's session on tokenkeeper's page, refresh it, and log the user "
                       "out everywhere.",
    },
}

# PAGE_SCOPES are the scopes a hub OAuth token for tokenkeeper's page may
# carry besides identifying its user: the hub issues them to a user who
# holds them and leaves out those the user does not hold.
PAGE_SCOPES = [SCOPE_SESSIONS, SCOPE_GUARD]


def access_scope(name="tokenkeeper"):
    """Return the scope that lets a token call the service ``name`` at all."""
    return f"access:services!service={name}"


def service_roles(name="tokenkeeper", *, revoke_tokens=False, stop_servers=False):
    """Return the role tokenkeeper's service needs, and nothing more.

    ``admin:users`` writes auth_state (JupyterHub's ``PATCH /users/{name}``
    needs it) and includes what reading auth_state needs
    (``admin:auth_state`` plus a read scope) and ``list:users``.
    ``read:servers`` tells who is running.

    ``stop_servers`` adds ``delete:servers`` (a logout stops the user's
    servers).

    ``revoke_tokens`` adds ``read:tokens`` and ``tokens`` (a logout revokes
    the user's browser-session hub tokens). JupyterHub has no narrower scope
    that deletes a user's tokens: ``tokens`` also creates them, for any user
    including hub admins, with all of that user's permissions. With it,
    whoever holds tokenkeeper's hub token can run code in every user's
    server and act as any admin. Leave it off unless revocation is worth
    that.
    """
    scopes = ["admin:users", "read:servers"]
    if revoke_tokens:
        scopes += ["read:tokens", "tokens"]
    if stop_servers:
        scopes.append("delete:servers")
    return [{
        "name": f"{name}-service",
        "description": "tokenkeeper: refresh users' tokens in auth_state",
        "scopes": scopes,
        "services": [name],
    }]


def page_admin_role(name="tokenkeeper-page-admins", *, users=(), groups=(), release_guard=False,
                    service="tokenkeeper"):
    """Return a role for the people who look after every user's session on tokenkeeper's page.

    It grants :data:`SCOPE_SESSIONS` (every user's view, "refresh now" and
    "log out everywhere" for any user), :data:`SCOPE_GUARD` too with
    ``release_guard`` (release the mass-failure guard), and access to the
    service ``service``. :func:`tokenkeeper_hub.configure` grants none of
    this: add the role on purpose, after ``configure``::

        c.JupyterHub.load_roles.append(tokenkeeper_hub.page_admin_role(users=["carol"], groups=["ops"]))

    ``users`` and ``groups`` are the role's members. JupyterHub makes the
    members of a role in ``load_roles`` exactly those listed, at every hub
    start; left empty, the role names none, and members assigned through
    the hub's API stay.
    """
    scopes = [SCOPE_SESSIONS, *([SCOPE_GUARD] if release_guard else []), access_scope(service)]
    role = {
        "name": name,
        "description": "tokenkeeper: every user's session on tokenkeeper's page"
                       + (", and the guard's release" if release_guard else ""),
        "scopes": scopes,
    }
    for kind, members in (("users", users), ("groups", groups)):
        if isinstance(members, str):
            raise TypeError(f"tokenkeeper: page_admin_role's {kind} is a list of names, not the string {members!r}")
        if members:
            role[kind] = list(members)
    return role


def _has_extra_user_scopes():
    """Report whether this JupyterHub has ``JupyterHub.extra_user_scopes`` (6.0 and later)."""
    from jupyterhub.app import JupyterHub

    return "extra_user_scopes" in JupyterHub.class_traits()


def _default_scopes(role):
    """Return the scopes JupyterHub gives its default role ``role`` ("user", "server")."""
    from jupyterhub.roles import get_default_roles

    return next(r["scopes"] for r in get_default_roles() if r["name"] == role)


def configured_entries(value):
    """Return the entries of a list setting as configured so far, the entries themselves.

    ``value`` is ``c.JupyterHub.load_roles`` or ``services``: a list when
    assigned, a LazyConfigValue when only appended to.
    """
    if isinstance(value, LazyConfigValue):
        # Not get_value(): it caches, and would drop what is appended later.
        d = value.to_dict()
        return [*d.get("prepend", []), *(obj for _, obj in d.get("inserts", [])), *d.get("extend", [])]
    return list(value or [])


def extend_role(c, role, scope):
    """Add ``scope`` to the default role ``role`` ("user" or "server") without redefining it.

    A role of that name already in ``c.JupyterHub.load_roles`` gets the
    scope added to its scopes. Otherwise the ``user`` role is extended
    through ``c.JupyterHub.extra_user_scopes`` (JupyterHub 6), and on
    JupyterHub 5, which lacks it, both roles are added to ``load_roles``
    with JupyterHub's own default scopes plus ``scope``. A role of the same
    name defined in ``load_roles`` after this call makes the hub refuse to
    start ("multiply defined"): call ``configure`` after defining roles.
    """
    extra = role == "user" and _has_extra_user_scopes()
    for entry in configured_entries(c.JupyterHub.load_roles):
        if entry.get("name") != role:
            continue
        if "scopes" in entry:
            if scope not in entry["scopes"]:
                entry["scopes"] = [*entry["scopes"], scope]
            return
        if not extra:
            # Defined without scopes (e.g. only members): JupyterHub keeps its defaults.
            entry["scopes"] = [*_default_scopes(role), scope]
            return
    if extra:
        c.JupyterHub.extra_user_scopes.add(scope)
        return
    c.JupyterHub.load_roles.append({"name": role, "scopes": [*_default_scopes(role), scope]})


def extend_server_token_scopes(c, scope):
    """Add ``scope`` to ``c.Spawner.server_token_scopes`` if it is configured.

    Unset, JupyterHub uses the ``server`` role, which :func:`extend_role`
    extends.
    """
    if "server_token_scopes" not in c.Spawner:
        return
    configured = c.Spawner.server_token_scopes
    if callable(configured):
        async def server_token_scopes(spawner):
            scopes = configured(spawner)
            if hasattr(scopes, "__await__"):
                scopes = await scopes
            return [*scopes, scope] if scopes else scopes
        c.Spawner.server_token_scopes = server_token_scopes
    elif configured:
        c.Spawner.server_token_scopes = [*configured, scope]
