"""Shared test fixtures: tiny datasets made by the project's own prepare scripts."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args, cwd=ROOT, timeout=300):
    """Run one of the project's scripts as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def sudoku4(tmp_path_factory):
    """300 generated 4x4 Sudoku x 4 (original + 3 augmentations) to train on, 40 to test."""
    out = tmp_path_factory.mktemp("data") / "sudoku4"
    done = run_script("prepare_sudoku.py", "--generate", 300, "--size", 4, "--num_test", 40, "--num_aug", 3,
                      "--out", out)
    assert done.returncode == 0, done.stderr
    return out
