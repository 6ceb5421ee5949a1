"""README.md's example jupyterhub_config.py is the one the integration stack runs.

The stack's jupyterhub_config.py holds the example between two marker
comments. This test takes the README's block, puts the stack's values in
place of the example's placeholders (PLACEHOLDERS: each must occur exactly
once), and compares the two as Python syntax trees: comments and layout may
differ, code may not. The stack's only additions inside the block are the
``**test_options`` and ``**test_settings`` spreads, which the comparison
leaves out; everything else the tests need comes before or after the block,
and may not set anything the block sets. A second test loads the README's
example as written with JupyterHub's config loader.
"""

import ast
import os
import re
from pathlib import Path

from traitlets.config import PyFileConfigLoader

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "integration" / "stack" / "jupyterhub_config.py"
BEGIN, END = "# --- README example begins ---", "# --- README example ends ---"
MARKER = "<!-- example: jupyterhub_config.py -->"

# PLACEHOLDERS maps the README's site-specific text to the stack's.
PLACEHOLDERS = [
    ('"https://keycloak.example.org/realms/jupyter"', 'f"http://127.0.0.1:{base + 80}/realms/jupyter"'),
    # The hub's public URL with its base URL (hub_base: "/", or a test's).
    ('"https://hub.example.org"', 'f"http://127.0.0.1:{base}{hub_base[:-1]}"'),
    ('c.JupyterHub.default_url = "/hub/home"', 'c.JupyterHub.default_url = f"{hub_base}hub/home"'),
    ("c.Authenticator.auth_refresh_age = 60", "c.Authenticator.auth_refresh_age = 5"),
    ('[os.path.join(sys.prefix, "bin", "jupyterhub-singleuser")]', '[f"{repo}/integration/stack/singleuser.sh"]'),
    ('["/usr/local/bin/tokenkeeper"]', '[env["TK_BIN"]]'),
    ('"http://127.0.0.1:10101"', 'f"http://127.0.0.1:{base + 23}"'),
    ('"/srv/jupyterhub/tokenkeeper.db"', 'f"{state}/tokenkeeper.db"'),
]
# TEST_SPREADS are the names the stack may spread (**) into the example's calls and dicts.
TEST_SPREADS = {"test_options", "test_settings"}


def readme_example():
    """Return the README's example: the python block right after MARKER."""
    text = (REPO / "README.md").read_text()
    assert text.count(MARKER) == 1, f"README.md must hold {MARKER} once"
    m = re.search(re.escape(MARKER) + r"\n```python\n(.*?)\n```", text, re.S)
    assert m, f"no python block right after {MARKER}"
    return m.group(1)


def stack_parts():
    """Return the stack config's text before, inside and after the README example."""
    text = STACK.read_text()
    before, rest = text.split(BEGIN + "\n")
    inside, after = rest.split(END + "\n")
    return before, inside, after


def substituted(example):
    for readme, stack in PLACEHOLDERS:
        assert example.count(readme) == 1, f"placeholder {readme} occurs {example.count(readme)} times in README's example"
        example = example.replace(readme, stack)
    return example


class DropTestSpreads(ast.NodeTransformer):
    """Removes ``**name`` for the names in TEST_SPREADS from calls and dict displays."""

    def visit_Call(self, node):
        self.generic_visit(node)
        node.keywords = [k for k in node.keywords if not (k.arg is None and self.spread(k.value))]
        return node

    def visit_Dict(self, node):
        self.generic_visit(node)
        pairs = [(k, v) for k, v in zip(node.keys, node.values) if not (k is None and self.spread(v))]
        node.keys, node.values = [k for k, _ in pairs], [v for _, v in pairs]
        return node

    @staticmethod
    def spread(value):
        return isinstance(value, ast.Name) and value.id in TEST_SPREADS


def test_the_stack_runs_the_readme_example():
    want = ast.dump(ast.parse(substituted(readme_example())))
    got = ast.dump(DropTestSpreads().visit(ast.parse(stack_parts()[1])))
    if got != want:
        want_lines = ast.unparse(ast.parse(substituted(readme_example()))).splitlines()
        got_lines = ast.unparse(DropTestSpreads().visit(ast.parse(stack_parts()[1]))).splitlines()
        diff = [f"README: {w}\nstack:  {g}" for w, g in zip(want_lines, got_lines) if w != g]
        diff += [f"README only: {w}" for w in want_lines[len(got_lines):]]
        diff += [f"stack only:  {g}" for g in got_lines[len(want_lines):]]
        raise AssertionError("the stack's README example differs from README.md's:\n" + "\n".join(diff[:10]))


def assigned(code):
    """Return the targets (as text) that code assigns at any depth."""
    out = set()
    for node in ast.walk(ast.parse(code)):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            out |= {ast.unparse(t) for t in targets if isinstance(t, ast.Attribute)}
    return out


def test_the_stack_changes_nothing_the_example_sets():
    before, inside, after = stack_parts()
    overridden = assigned(inside) & (assigned(before) | assigned(after))
    assert not overridden, f"the stack sets what the README example sets, outside it: {sorted(overridden)}"


def test_the_readme_example_loads_as_written(tmp_path, monkeypatch):
    """JupyterHub's loader runs the example with the secrets it names set, and configure() succeeds."""
    for name in ("OAUTH_CLIENT_SECRET", "TOKENKEEPER_STATE_KEY", "KEYCLOAK_SA_SECRET", "KEYCLOAK_ADMIN_CLIENT_SECRET"):
        monkeypatch.setenv(name, f"{name.lower()}-value")
    (tmp_path / "jupyterhub_config.py").write_text(readme_example())
    c = PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()
    (service,) = [s for s in c.JupyterHub.services.to_dict()["extend"] if s["name"] == "tokenkeeper"]
    assert service["command"] == ["/usr/local/bin/tokenkeeper"]
    assert service["url"] == "http://127.0.0.1:10101"
    env = service["environment"]
    assert env["TOKENKEEPER_ISSUER_URL"] == "https://keycloak.example.org/realms/jupyter"
    assert env["TOKENKEEPER_CLIENT_SECRET"] == "oauth_client_secret-value"
    assert env["TOKENKEEPER_SERVICE_ACCOUNT_CLIENT_ID"] == "tokenkeeper-sa"
    assert env["TOKENKEEPER_SERVICE_ACCOUNT_SECRET"] == "keycloak_sa_secret-value"
    assert c.JupyterHub.spawner_class == "simple"
    assert c.JupyterHub.default_url == "/hub/home"
    assert os.path.basename(c.Spawner.cmd[0]) == "jupyterhub-singleuser"
    assert callable(c.Spawner.pre_spawn_hook)
    assert c.GenericOAuthenticator.oauth_callback_url == "https://hub.example.org/hub/oauth_callback"


def test_the_stack_imports_the_installed_package():
    """No sys.path edits: the hub imports tokenkeeper_hub from its environment, as an admin's does."""
    tree = ast.parse(STACK.read_text())
    touched = [ast.unparse(n) for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and ast.unparse(n) == "sys.path"]
    assert touched == [], f"the stack's config edits sys.path: {touched}"
