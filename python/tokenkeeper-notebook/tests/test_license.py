"""The package's license: its LICENSE is the repository's, and the installed
wheel declares it (PEP 639)."""

from importlib.metadata import distribution
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent
ROOT_LICENSE = PACKAGE.parent.parent / "LICENSE"


def test_license_is_the_repositorys():
    if not ROOT_LICENSE.is_file():
        pytest.skip("not inside the tokenkeeper repository (an sdist)")
    assert (PACKAGE / "LICENSE").read_text() == ROOT_LICENSE.read_text(), (
        "python/tokenkeeper-notebook/LICENSE must be a copy of the repository's LICENSE"
    )


def test_wheel_declares_and_carries_the_license():
    dist = distribution("tokenkeeper-notebook")
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    files = [f for f in dist.files or [] if str(f).endswith("licenses/LICENSE")]
    assert len(files) == 1, dist.files
    assert files[0].read_text() == (PACKAGE / "LICENSE").read_text()
