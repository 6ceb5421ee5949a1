"""Tests of what configure() does for tokenkeeper's page: the service entry, the sessions scope,
page_admin_role, and what JupyterHub itself makes of them (run with JupyterHub 5 and 6).
"""

import pytest
from traitlets.config import Config

import tokenkeeper_hub as tk
from tokenkeeper_hub.roles import configured_entries

SESSIONS, GUARD = "custom:tokenkeeper:sessions", "custom:tokenkeeper:guard"


def configured_service(c=None, **options):
    c = c or Config()
    tk.configure(c, command=["tokenkeeper"], url="http://127.0.0.1:10101", **options)
    (service,) = configured_entries(c.JupyterHub.services)
    return c, service


def granted(c):
    """Every scope a role in c's load_roles or the user role's extra scopes grants."""
    roles = configured_entries(c.JupyterHub.load_roles)
    return {s for r in roles for s in r.get("scopes", [])} | set(c.JupyterHub.extra_user_scopes.get_value(set()))


def test_the_page_is_in_the_services_menu_and_its_tokens_may_carry_the_page_scopes():
    c, service = configured_service()
    assert service["display"] is True
    assert service["oauth_no_confirm"] is True, "users would be asked to confirm the admin's own service"
    assert service["oauth_client_allowed_scopes"] == [SESSIONS, GUARD]
    assert service["url"] == "http://127.0.0.1:10101"
    assert tk.PAGE_SCOPES == [tk.SCOPE_SESSIONS, tk.SCOPE_GUARD] == [SESSIONS, GUARD]
    custom = c.JupyterHub.custom_scopes.get_value({})
    assert "every user's session" in custom[SESSIONS]["description"]
    assert GUARD in custom


def test_nobody_holds_the_page_scopes_by_default():
    c, _ = configured_service(revoke_tokens=True, stop_servers=True, refresh_admins=True)
    assert not {SESSIONS, GUARD} & granted(c)


def test_jupyterhub_knows_every_key_of_the_entry():
    from jupyterhub.services.service import Service

    _, service = configured_service()
    traits = Service.class_traits()
    assert [k for k in service if k not in traits] == [], "JupyterHub refuses a service entry with an unknown key"


def test_an_admins_own_choices_in_the_entry_are_kept():
    c = Config()
    c.JupyterHub.services = [{"name": "tokenkeeper", "api_token": "t" * 32, "display": False,
                              "oauth_no_confirm": False, "oauth_client_allowed_scopes": ["custom:theirs", GUARD]}]
    tk.configure(c, url="http://hub:10101")
    (service,) = configured_entries(c.JupyterHub.services)
    assert service["display"] is False
    assert service["oauth_no_confirm"] is False
    assert service["oauth_client_allowed_scopes"] == ["custom:theirs", GUARD, SESSIONS]


# --- page_admin_role ---------------------------------------------------------------


def test_page_admin_role_grants_the_sessions_scope_and_access():
    role = tk.page_admin_role(users=["carol"], groups=["ops"])
    assert role["name"] == "tokenkeeper-page-admins"
    assert role["scopes"] == [SESSIONS, "access:services!service=tokenkeeper"]
    assert (role["users"], role["groups"]) == (["carol"], ["ops"])


def test_page_admin_role_grants_the_guard_only_when_asked():
    role = tk.page_admin_role("tk-ops", users=("dave",), release_guard=True, service="tk")
    assert role["name"] == "tk-ops"
    assert role["scopes"] == [SESSIONS, GUARD, "access:services!service=tk"]
    assert role["users"] == ["dave"] and "groups" not in role


def test_page_admin_role_without_members_leaves_membership_to_the_hub():
    # A users or groups key makes the role's members exactly those at each
    # hub start; without one, members assigned through the hub's API stay.
    role = tk.page_admin_role()
    assert "users" not in role and "groups" not in role


def test_page_admin_role_refuses_a_string_for_a_list():
    with pytest.raises(TypeError, match="list of names"):
        tk.page_admin_role(users="carol")


@pytest.mark.parametrize("release_guard", [False, True])
def test_jupyterhub_accepts_the_scopes_and_the_role(release_guard):
    from jupyterhub import roles, scopes

    scopes.define_custom_scopes(tk.CUSTOM_SCOPES)
    role = tk.page_admin_role(users=["carol"], release_guard=release_guard)
    roles._validate_role_name(role["name"])
    scopes._check_scopes_exist(role["scopes"])
    scopes._check_scopes_exist([f"{SESSIONS}!user=bob"])  # one user's view and actions


# --- what JupyterHub issues to the page ------------------------------------------------


@pytest.fixture
def hub_db():
    """A JupyterHub database in memory with user alice and the tokenkeeper service as an OAuth client."""
    from jupyterhub import orm, scopes

    scopes.define_custom_scopes(tk.CUSTOM_SCOPES)
    db = orm.new_session_factory("sqlite:///:memory:")()
    user = orm.User(name="alice")
    client = orm.OAuthClient(identifier="service-tokenkeeper")
    client.allowed_scopes = [*tk.PAGE_SCOPES, "access:services!service=tokenkeeper"]
    db.add_all([user, client, orm.Service(name="tokenkeeper", oauth_client=client)])
    db.commit()
    yield db, user, client
    db.close()


@pytest.mark.parametrize("held, carried", [
    (set(), set()),
    ({SESSIONS}, {SESSIONS}),
    ({GUARD}, {GUARD}),
    ({SESSIONS, GUARD}, {SESSIONS, GUARD}),
    ({f"{SESSIONS}!user=bob"}, {f"{SESSIONS}!user=bob"}),
])
def test_a_users_page_token_carries_the_page_scopes_they_hold_and_no_others(hub_db, held, carried):
    # What JupyterHub's OAuth authorize handler does (apihandlers/auth.py,
    # OAuthAuthorizeHandler.get): it takes the client's default scopes
    # (oauth/provider.py, get_default_scopes: the allowed scopes, identify
    # and access), intersects them with the user's own, and issues the
    # token with what is left, only logging the rest: a user lacking a page
    # scope still logs in.
    from jupyterhub import scopes

    db, user, client = hub_db
    requested = {*client.allowed_scopes, *scopes.identify_scopes(), *scopes.access_scopes(client)}
    required = {*scopes.identify_scopes(), *scopes.access_scopes(client)}
    have = {"self", *held, "inherit", *required}
    allowed, _ = scopes._resolve_requested_scopes(requested, have, user=user, client=client, db=db)
    assert {s for s in allowed if s.startswith("custom:")} == carried
    assert "access:services!service=tokenkeeper" in allowed
