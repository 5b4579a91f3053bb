"""Local git repositories for the update tests: an isolated git environment, and a bare
origin with a working clone that pushes to it."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from pathlib import Path


def isolated_git_env(home: Path) -> dict[str, str]:
    """Variables that keep git away from the user's and the system's configuration and
    give it an identity; *home* is created."""
    home.mkdir(parents=True, exist_ok=True)
    variables = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    for role in ("AUTHOR", "COMMITTER"):
        variables[f"GIT_{role}_NAME"] = "Test"
        variables[f"GIT_{role}_EMAIL"] = "test@example.invalid"
    return variables


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run git in *cwd* (checked); its stdout, stripped."""
    completed = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return completed.stdout.strip()


@attrs.define
class Remote:
    """A bare repository used as origin, and a working clone (``seed``) that pushes to it.

    Args:
        env: the environment git runs in (None: this process's).
    """

    bare: Path
    seed: Path
    branch: str
    env: dict[str, str] | None = None

    @classmethod
    def create(
        cls,
        root: Path,
        files: dict[str, str],
        branch: str = "main",
        env: dict[str, str] | None = None,
        message: str = "initial",
    ) -> Remote:
        """A new origin under *root* whose first commit holds *files*."""
        root.mkdir(parents=True, exist_ok=True)
        remote = cls(root / "origin.git", root / "seed", branch, env)
        remote.git(root, "init", "--quiet", "--bare", "-b", branch, str(remote.bare))
        remote.git(root, "init", "--quiet", "-b", branch, str(remote.seed))
        remote.git(remote.seed, "remote", "add", "origin", str(remote.bare))
        remote.commit(files, message)
        return remote

    @property
    def url(self) -> str:
        return str(self.bare)

    def git(self, cwd: Path, *args: str) -> str:
        return git(cwd, *args, env=self.env)

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        """Commit *files* in the seed, push them to origin, return the new sha."""
        for name, text in files.items():
            path = self.seed / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git(self.seed, "add", "--all")
        self.git(self.seed, "commit", "--quiet", "-m", message)
        self.git(self.seed, "push", "--quiet", "origin", self.branch)
        return self.git(self.seed, "rev-parse", "HEAD")

    def clone(self, destination: Path) -> Path:
        self.git(destination.parent, "clone", "--quiet", self.url, str(destination))
        return destination
