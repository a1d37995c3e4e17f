"""The code stays as STYLE.md asks: ruff-clean and formatted, typed (mypy strict)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import ROOT, STARTUP


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
# mypy with no cache on a cold, busy machine takes minutes: bounded far above that.
@pytest.mark.timeout(2 * STARTUP + 60)
def test_the_code_passes(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2 * STARTUP,
    )
    assert result.returncode == 0, result.stdout + result.stderr
