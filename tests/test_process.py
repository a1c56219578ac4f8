"""Running one command: the output tail that failure messages show."""

from __future__ import annotations

import sys
from pathlib import Path

from pytest_autodeploy.process import run_command


def test_tail_escapes_control_characters(tmp_path: Path) -> None:
    script = "import sys; sys.stdout.write('\\x1b[2Jcleared\\x00nul\\tok\\n')"

    result = run_command([sys.executable, "-c", script], env={}, log_path=tmp_path / "out.log", timeout=30)

    assert result.tail() == "?[2Jcleared?nul\tok\n"


def test_tail_empty_output(tmp_path: Path) -> None:
    result = run_command([sys.executable, "-c", "pass"], env={}, log_path=tmp_path / "out.log", timeout=30)

    assert result.returncode == 0
    assert result.tail() == "(no output)"
