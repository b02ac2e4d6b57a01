"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.supervising import CHILD, PY


@pytest.fixture
def child(tmp_path: Path) -> str:
    """The command line of the supervisor tests' child program (``CHILD``)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return f"{PY} -u {script}"
