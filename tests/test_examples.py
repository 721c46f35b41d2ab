"""The README's own-model example is the file examples/own_model.py, and it runs and forgets the digit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_model.py"


def test_readme_shows_the_example_file_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in readme


@pytest.mark.slow  # trains a small CNN on the 1,797 scikit-learn digits, then unlearns (about 30 s)
def test_own_model_example_runs_and_forgets_the_digit(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = re.search(r"acc/forget\s*│\s*([\d.]+)\s*│\s*([\d.]+)", result.stdout)
    assert row is not None, result.stdout[-3000:]
    assert float(row.group(1)) > 90.0 and float(row.group(2)) < 5.0
    retain = re.search(r"acc/test_retain\s*│\s*([\d.]+)\s*│\s*([\d.]+)", result.stdout)
    assert retain is not None and float(retain.group(2)) > float(retain.group(1)) - 5.0
    assert list((tmp_path / "runs" / "own_model").rglob("classifier.pt"))
