"""Tests for trio_orchestrator.gitupdate against real git, with local bare repos as origin."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from gitrepo import Remote, git, isolated_git_env
from helpers import pid_alive

from trio_orchestrator.config import BotConfig, Config
from trio_orchestrator.gitupdate import (
    UpdateResult,
    current_commit,
    rollback_checkout,
    update_checkout,
)

pytestmark = [
    pytest.mark.git,
    pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable"),
]


@pytest.fixture(autouse=True)
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate git from the user's and system's configuration, and give it an identity."""
    for name, value in isolated_git_env(tmp_path / "home").items():
        monkeypatch.setenv(name, value)
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_SSH_COMMAND", "GIT_SSH"):
        monkeypatch.delenv(name, raising=False)


def make_remote(root: Path, branch: str = "main", files: dict[str, str] | None = None) -> Remote:
    return Remote.create(root, files or {"main.py": "print('v1')\n"}, branch)


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return make_remote(tmp_path / "remote")


def make_bot(tmp_path: Path, directory: Path, repo_url: str, **settings: object) -> BotConfig:
    data = {
        "bots": {
            "Bot": {
                "script": "main.py",
                "directory": str(directory),
                "repo_url": repo_url,
                **settings,
            }
        }
    }
    return Config.from_mapping(data, tmp_path / "bot_config.yaml").bot("Bot")


def head(directory: Path) -> str:
    return git(directory, "rev-parse", "HEAD")


def test_clean_checkout_pulls_new_commit(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    old = head(bot_dir)
    new = remote.commit({"main.py": "print('v2')\n"})

    result = update_checkout(make_bot(tmp_path, bot_dir, remote.url))

    assert result == UpdateResult("updated", f"updated {old[:7]} -> {new[:7]}", old, new)
    assert result.changed
    assert (bot_dir / "main.py").read_text() == "print('v2')\n"


def test_up_to_date_checkout(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    sha = head(bot_dir)

    result = update_checkout(make_bot(tmp_path, bot_dir, remote.url))

    assert result == UpdateResult("up-to-date", f"up-to-date at {sha[:7]}", sha, sha)
    assert not result.changed


@pytest.mark.parametrize("spelling", ["{url}/", "{url}", "{stem}"])
def test_origin_url_trivial_spellings_match(tmp_path: Path, remote: Remote, spelling: str) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    repo_url = spelling.format(url=remote.url, stem=remote.url.removesuffix(".git"))

    assert update_checkout(make_bot(tmp_path, bot_dir, repo_url)).outcome == "up-to-date"


def test_hooks_from_the_bot_repository_never_run(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    marker = tmp_path / "hook-ran"
    hook = bot_dir / ".git" / "hooks" / "post-merge"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    remote.commit({"main.py": "print('v2')\n"})

    assert update_checkout(make_bot(tmp_path, bot_dir, remote.url)).outcome == "updated"
    assert not marker.exists()


def test_local_changes_skip_without_force_sync(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    old = head(bot_dir)
    (bot_dir / "main.py").write_text("print('local edit')\n")
    remote.commit({"main.py": "print('v2')\n"})

    result = update_checkout(make_bot(tmp_path, bot_dir, remote.url))

    assert result == UpdateResult(
        "skipped", "skipped: local changes and force_sync is false", old, old
    )
    assert (bot_dir / "main.py").read_text() == "print('local edit')\n"
    assert head(bot_dir) == old


def test_untracked_files_are_not_local_changes(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    (bot_dir / "notes.txt").write_text("mine\n")
    remote.commit({"main.py": "print('v2')\n"})

    assert update_checkout(make_bot(tmp_path, bot_dir, remote.url)).outcome == "updated"
    assert (bot_dir / "notes.txt").read_text() == "mine\n"


def test_force_sync_restores_preserved_file_and_directory(tmp_path: Path) -> None:
    remote = make_remote(
        tmp_path / "remote",
        files={
            "main.py": "print('v1')\n",
            "config/local.yaml": "remote: 1\n",
            "data/state.json": "{}\n",
        },
    )
    bot_dir = remote.clone(tmp_path / "bot")
    old = head(bot_dir)
    (bot_dir / "main.py").write_text("print('local edit')\n")
    (bot_dir / "config/local.yaml").write_text("local: true\n")
    (bot_dir / "data/state.json").write_text('{"local": true}\n')
    (bot_dir / "data/extra.txt").write_text("extra\n")
    new = remote.commit(
        {
            "main.py": "print('v2')\n",
            "config/local.yaml": "remote: 2\n",
            "data/state.json": '{"remote": 2}\n',
        }
    )
    bot = make_bot(
        tmp_path,
        bot_dir,
        remote.url,
        force_sync=True,
        preserve_files=["config/local.yaml", "data", "missing.txt"],
    )

    result = update_checkout(bot)

    assert result.outcome == "updated"
    assert (result.old_commit, result.new_commit) == (old, new)
    assert "local changes discarded" in result.message
    assert "rejected" not in result.message
    assert head(bot_dir) == new
    assert (bot_dir / "main.py").read_text() == "print('v2')\n"
    assert (bot_dir / "config/local.yaml").read_text() == "local: true\n"
    assert (bot_dir / "data/state.json").read_text() == '{"local": true}\n'
    assert (bot_dir / "data/extra.txt").read_text() == "extra\n"
    assert not (bot_dir / "missing.txt").exists()


def test_force_sync_without_new_commit_says_changes_were_discarded(
    tmp_path: Path, remote: Remote
) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    sha = head(bot_dir)
    (bot_dir / "main.py").write_text("print('local edit')\n")

    result = update_checkout(make_bot(tmp_path, bot_dir, remote.url, force_sync=True))

    assert result == UpdateResult(
        "up-to-date", f"up-to-date at {sha[:7]}; local changes discarded", sha, sha
    )
    assert (bot_dir / "main.py").read_text() == "print('v1')\n"


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlinked-dir", "symlinked-file"])
def test_unsafe_preserve_entries_are_rejected(tmp_path: Path, remote: Remote, kind: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("secret\n")
    before = secret.stat()
    bot_dir = remote.clone(tmp_path / "bot")
    entry = {
        "absolute": str(secret),
        "dotdot": "../outside/secret.txt",
        "symlinked-dir": "link/secret.txt",
        "symlinked-file": "secret-link",
    }[kind]
    (bot_dir / "link").symlink_to(outside)
    (bot_dir / "secret-link").symlink_to(secret)
    (bot_dir / ".env").write_text("TOKEN=local\n")
    (bot_dir / "main.py").write_text("print('local edit')\n")
    remote.commit({"main.py": "print('v2')\n", ".env": "TOKEN=remote\n"})
    bot = make_bot(tmp_path, bot_dir, remote.url, force_sync=True, preserve_files=[entry, ".env"])

    result = update_checkout(bot)

    # The safe entry is still preserved; the unsafe one is named and never touched.
    assert result.outcome == "updated"
    assert f"rejected preserve_files {entry!r}" in result.message
    assert (bot_dir / ".env").read_text() == "TOKEN=local\n"
    after = secret.stat()
    assert secret.read_text() == "secret\n"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_origin_mismatch_fails(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    other = make_remote(tmp_path / "other")
    sha = head(bot_dir)

    result = update_checkout(make_bot(tmp_path, bot_dir, other.url))

    assert result == UpdateResult(
        "failed", f"failed: origin is {remote.url}, expected {other.url}", sha, None
    )


def test_bootstrap_uses_the_remote_default_branch(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote", branch="trunk")
    # A decoy `main` branch: guessing main instead of asking the remote picks it.
    git(remote.seed, "push", "--quiet", "origin", "trunk:main")
    trunk = remote.commit({"main.py": "print('trunk')\n"})
    bot_dir = tmp_path / "bot"
    bot_dir.mkdir()
    (bot_dir / "main.py").write_text("print('copied by hand')\n")
    (bot_dir / ".env").write_text("TOKEN=local\n")

    result = update_checkout(make_bot(tmp_path, bot_dir, remote.url, preserve_files=[".env"]))

    assert result == UpdateResult(
        "bootstrapped", f"bootstrapped at {trunk[:7]} from origin/trunk", None, trunk
    )
    assert (bot_dir / "main.py").read_text() == "print('trunk')\n"
    assert (bot_dir / ".env").read_text() == "TOKEN=local\n"
    assert git(bot_dir, "rev-parse", "--abbrev-ref", "HEAD") == "trunk"
    assert git(bot_dir, "rev-parse", "--abbrev-ref", "@{upstream}") == "origin/trunk"
    # The bootstrapped checkout then updates like any clone.
    newer = remote.commit({"main.py": "print('trunk 2')\n"})
    assert update_checkout(make_bot(tmp_path, bot_dir, remote.url)).new_commit == newer


def test_bootstrap_against_empty_remote_fails_and_leaves_no_repository(tmp_path: Path) -> None:
    bare = tmp_path / "empty.git"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "trunk", str(bare))
    bot_dir = tmp_path / "bot"
    bot_dir.mkdir()
    (bot_dir / "main.py").write_text("print('mine')\n")

    result = update_checkout(make_bot(tmp_path, bot_dir, str(bare)))

    assert result.outcome == "failed"
    assert result.message.startswith("failed: remote has no default branch")
    assert not (bot_dir / ".git").exists()
    assert (bot_dir / "main.py").read_text() == "print('mine')\n"


def test_unreachable_remote_fails(tmp_path: Path) -> None:
    bot_dir = tmp_path / "bot"
    bot_dir.mkdir()
    missing = str(tmp_path / "no-such-repo.git")

    result = update_checkout(make_bot(tmp_path, bot_dir, missing))

    assert result.outcome == "failed"
    assert "does not appear to be a git repository" in result.message
    assert "\n" not in result.message


def test_remote_branch_deleted_fails(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    git(remote.seed, "push", "--quiet", "origin", "main:other")
    git(remote.bare, "symbolic-ref", "HEAD", "refs/heads/other")
    git(remote.seed, "push", "--quiet", "origin", ":main")

    result = update_checkout(make_bot(tmp_path, bot_dir, remote.url))

    assert result.outcome == "failed"
    assert result.message.startswith("failed: git pull: ")
    assert "main" in result.message


def test_force_sync_falls_back_to_main_when_remote_head_is_unborn(
    tmp_path: Path, remote: Remote
) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    (bot_dir / "main.py").write_text("print('local edit')\n")
    new = remote.commit({"main.py": "print('v2')\n"})
    git(remote.bare, "symbolic-ref", "HEAD", "refs/heads/nothing-here")

    result = update_checkout(make_bot(tmp_path, bot_dir, remote.url, force_sync=True))

    assert (result.outcome, result.new_commit) == ("updated", new)


def test_force_sync_fails_when_remote_has_no_default_branch(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    (bot_dir / "main.py").write_text("print('local edit')\n")
    git(remote.seed, "push", "--quiet", "origin", "main:dev")
    git(remote.bare, "symbolic-ref", "HEAD", "refs/heads/nothing-here")
    git(remote.seed, "push", "--quiet", "origin", ":main")

    result = update_checkout(make_bot(tmp_path, bot_dir, remote.url, force_sync=True))

    assert result.outcome == "failed"
    assert result.message.startswith("failed: remote has no default branch")
    assert (bot_dir / "main.py").read_text() == "print('local edit')\n"


@pytest.mark.parametrize("relation", ["is", "contains"])
def test_protected_directory_is_never_updated(
    tmp_path: Path, remote: Remote, relation: str
) -> None:
    bot_dir = tmp_path / "bot"
    (bot_dir / "orchestrator").mkdir(parents=True)
    protected = bot_dir if relation == "is" else bot_dir / "orchestrator"

    result = update_checkout(
        make_bot(tmp_path, bot_dir, remote.url), protected_dirs=[tmp_path / "elsewhere", protected]
    )

    assert result.outcome == "skipped"
    assert str(protected) in result.message
    assert not (bot_dir / ".git").exists()  # git never ran: it would have bootstrapped


def test_missing_directory_fails(tmp_path: Path, remote: Remote) -> None:
    result = update_checkout(make_bot(tmp_path, tmp_path / "gone", remote.url))

    assert result.outcome == "failed"
    assert result.message == f"failed: directory {tmp_path / 'gone'} does not exist"


def test_missing_git_executable_fails_cleanly(
    tmp_path: Path, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    result = update_checkout(make_bot(tmp_path, bot_dir, remote.url))

    assert result == UpdateResult("failed", "failed: git executable not found", None, None)
    assert current_commit(bot_dir) is None


def test_hanging_remote_times_out_and_kills_its_helpers(
    tmp_path: Path, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    url = "ssh://git.example.invalid/repo.git"
    git(bot_dir, "remote", "set-url", "origin", url)
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    pids = tmp_path / "ssh.pids"
    ssh = fake_bin / "ssh"
    # An "ssh" that never answers, with a child of its own, as real helpers have.
    ssh.write_text(f"#!/bin/sh\nsleep 30 &\necho $! >> {pids}\necho $$ >> {pids}\nwait\n")
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    timeout = 1.5

    start = time.monotonic()
    result = update_checkout(make_bot(tmp_path, bot_dir, url), timeout=timeout)
    elapsed = time.monotonic() - start

    assert result.outcome == "failed"
    assert result.message == f"failed: git pull timed out after {timeout:g}s"
    assert elapsed < timeout + 2
    started = [int(line) for line in pids.read_text().split()]
    assert started
    deadline = time.monotonic() + 2
    while any(pid_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in started if pid_alive(pid)]


def test_current_commit(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)

    assert current_commit(bot_dir) == head(bot_dir)
    # No repository of its own, even inside a checkout: never the parent's commit.
    assert current_commit(bot_dir / "sub-dir-missing") is None
    (bot_dir / "nested").mkdir()
    assert current_commit(bot_dir / "nested") is None
    assert current_commit(plain / "sub") is None


# ----- rollback (issue 13.5) -----


def test_rollback_resets_to_the_previous_commit_keeping_preserved_files(
    tmp_path: Path, remote: Remote
) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    good = head(bot_dir)
    bad = remote.commit({"main.py": "raise SystemExit(1)\n"})
    bot = make_bot(tmp_path, bot_dir, remote.url, preserve_files=[".env"])
    assert update_checkout(bot).new_commit == bad
    (bot_dir / ".env").write_text("TOKEN=1\n")

    result = rollback_checkout(bot, good)

    assert result == UpdateResult("rolled-back", f"rolled back {bad[:7]} -> {good[:7]}", bad, good)
    assert head(bot_dir) == good
    assert (bot_dir / "main.py").read_text() == "print('v1')\n"
    assert (bot_dir / ".env").read_text() == "TOKEN=1\n"


def test_rollback_to_an_unknown_commit_fails(tmp_path: Path, remote: Remote) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    sha = head(bot_dir)
    result = rollback_checkout(make_bot(tmp_path, bot_dir, remote.url), "0" * 40)
    assert result.outcome == "failed" and result.message.startswith("failed: git cat-file")
    assert head(bot_dir) == sha
