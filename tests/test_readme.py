"""The README's commands work as written after its own install step: the marked block runs
in a fresh directory whose `.venv` is this test run's environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- tests/test_readme.py runs this block as written -->"


def readme_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(re.escape(MARK) + r"\s*```sh\n(.*?)```", text, flags=re.S)


def test_readme_first_steps_run_as_written(tmp_path: Path) -> None:
    (block,) = readme_blocks()
    # The README's install step makes ./.venv; this run's environment stands for it.
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    assert (tmp_path / ".venv" / "bin" / "meterbill").exists(), "console script not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METERBILL_", "STRIPE_"))}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"home {tmp_path / '.meterbill'}" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("meterbill ")
    assert any(line.startswith("mb_") for line in lines)
    assert lines[-1].count(".") == 2  # the token: a JWT
    assert (tmp_path / ".meterbill" / "meterbill.db").is_file()
