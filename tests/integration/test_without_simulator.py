"""Without fuagent-sim the simulator tests are skipped by name, and fail on CI."""

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import APP_SETTINGS, REPO_ROOT


def run_simulator_tests(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the simulator tests with no simulator anywhere to be found."""
    environ = {k: v for k, v in os.environ.items() if k not in (*APP_SETTINGS, "CI")}
    environ.update(FUAGENT_SIM=str(tmp_path / "no-such-sim"), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "simulator", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def count(outcome: str, output: str) -> int:
    found = re.search(rf"(\d+) {outcome}", output.splitlines()[-1])
    return int(found.group(1)) if found else 0


def test_simulator_tests_are_skipped_by_name_without_the_simulator(tmp_path: Path) -> None:
    proc = run_simulator_tests(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    skipped = count("skipped", proc.stdout)
    # Every simulator test, test_faults' that runs the simulator in a thread among them.
    assert skipped >= 13, proc.stdout[-3000:]
    assert f"SKIPPED [{skipped}]" in proc.stdout and "fuagent-sim not found" in proc.stdout
    assert count("failed", proc.stdout) == count("error", proc.stdout) == 0


def test_simulator_tests_fail_on_ci_without_the_simulator(tmp_path: Path) -> None:
    proc = run_simulator_tests(tmp_path, CI="true")
    assert proc.returncode == 1, proc.stdout[-3000:]
    # Skipped at setup, so they count as errors.
    assert count("failed", proc.stdout) + count("error", proc.stdout) >= 13, proc.stdout[-3000:]
    assert count("skipped", proc.stdout) == 0
    assert "a simulator test may not be skipped on CI" in proc.stdout
