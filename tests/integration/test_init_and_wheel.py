"""What a new user gets: `trio-orch init` runs as written, and the wheel carries it.

The wheel test builds the project as a user's `pip install` / `pipx install` would and runs
`init` and `check` from the built files alone, so a template left out of the package data
fails here rather than on a user's machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import CLI, cli, wait_for

from trio_orchestrator import __version__

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ("bot_config.yaml", "example_bot.py", "completion.bash", "completion.zsh")


def test_init_then_start_all_runs_the_example_bot(tmp_path, manager_factory):
    target = tmp_path / "mybots"
    result = subprocess.run([*CLI, "init", str(target)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    config = target / "bot_config.yaml"
    checked = cli(config, "check")
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr

    manager = manager_factory(config, env={**os.environ, "NO_COLOR": "1"})
    manager.wait_ready()
    wait_for(lambda: "[Example] heartbeat 1" in manager.output(), 20, message="heartbeat")
    listing = cli(config, "list")
    assert "manager: running" in listing.stdout
    assert listing.stdout.splitlines()[-1] == "1 bot: 1 running"

    assert manager.stop(signal.SIGINT) == 0
    output = manager.output()
    # The example bot handled the stop itself (no SIGKILL needed).
    assert "[Example] SIGTERM received, stopping" in output
    assert "[Example] stopped cleanly after" in output
    log = (target / "logs" / "Example.log").read_text()
    assert "[Example] heartbeat 1" in log


@pytest.mark.slow
def test_wheel_ships_the_templates_and_works_from_its_files(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("trio_orch-*.whl")
    assert wheel.name.startswith(f"trio_orch-{__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"trio_orch-{__version__}.dist-info/METADATA").decode()
    for template in TEMPLATES:
        assert f"trio_orchestrator/templates/{template}" in names
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)
    assert "License-Expression: MIT" in metadata
    assert "Requires-Dist: attrs>=23.2" in metadata
    assert "Classifier: Operating System :: POSIX :: Linux" in metadata

    # Unpacked alone on the path (its dependencies come from this environment), run from
    # a directory without the source tree, as a user would.
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, cwd=tmp_path
        )

    where = run("-c", "import trio_orchestrator; print(trio_orchestrator.__file__)")
    assert where.stdout.startswith(str(site)), where.stdout
    init = run("-m", "trio_orchestrator", "init", "fresh")
    assert init.returncode == 0, init.stderr
    check = run("-m", "trio_orchestrator", "--config", "fresh/bot_config.yaml", "check")
    assert check.returncode == 0 and "OK, 1 bot: Example" in check.stdout, check.stderr
    completion = run("-m", "trio_orchestrator", "completion", "bash")
    assert completion.returncode == 0 and "complete -F _trio_orch trio-orch" in completion.stdout
