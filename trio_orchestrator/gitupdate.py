"""Git auto-update of a bot's checkout (SPEC 7).

Plain synchronous code: the supervisor runs :func:`update_checkout` in a worker thread
(``trio.to_thread.run_sync``) before each start of a bot with auto-update enabled. It is the
only module that runs git. Every problem becomes an :class:`UpdateResult` with outcome
``"failed"`` rather than an exception, because a failed update must never keep a bot from
starting on the code it already has.

Git runs with hooks disabled, without any way to prompt, in its own session, and within one
time budget for the whole update; on timeout the whole process group (git and the helpers
it spawned, such as ``ssh``) is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import attrs

from trio_orchestrator.children import CHILDREN

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trio_orchestrator.config import BotConfig

__all__ = ["OUTCOMES", "UpdateResult", "current_commit", "rollback_checkout", "update_checkout"]

LOGGER = logging.getLogger(__name__)

OUTCOMES = ("updated", "up-to-date", "bootstrapped", "rolled-back", "skipped", "failed")

# Placed before every subcommand. Hooks and fsmonitor are programs named by the bot's
# repository; an update must never execute code from the checkout it is updating.
_GIT_OPTIONS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
# Inherited variables that would point git at another repository than the bot's.
_REPOSITORY_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
# Asked of the remote only when it does not advertise its HEAD (SPEC 7).
_FALLBACK_BRANCHES = ("main", "master")
_SHORT_SHA = 7
# How often a running git command checks whether the update was cancelled.
CANCEL_POLL_SECONDS = 0.2


@attrs.frozen
class UpdateResult:
    """What one update attempt did.

    Attributes:
        outcome: One of :data:`OUTCOMES`.
        message: One human-readable line, starting with the outcome for ``skipped`` and
            ``failed`` (``"failed: git fetch timed out after 60s"``).
        old_commit: Full sha of HEAD before the update, or None if there was none or it was
            not looked up.
        new_commit: Full sha of HEAD after the update, or None if unknown (always None for
            ``failed``).
    """

    outcome: str = attrs.field(validator=attrs.validators.in_(OUTCOMES))
    message: str
    old_commit: str | None
    new_commit: str | None

    @property
    def changed(self) -> bool:
        """True when the checkout now stands on another commit than before."""
        return self.new_commit is not None and self.new_commit != self.old_commit


def update_checkout(
    bot: BotConfig,
    *,
    protected_dirs: Sequence[Path] = (),
    timeout: float = 60.0,
    cancel: threading.Event | None = None,
) -> UpdateResult:
    """Bring *bot*'s directory up to date with its ``repo_url`` (SPEC 7).

    Steps: the directory must exist and must not be, or contain, any of *protected_dirs*;
    a directory without ``.git`` is bootstrapped (init, origin, fetch, hard reset to the
    remote's default branch); a checkout with local changes is skipped unless
    ``force_sync`` is set, in which case ``preserve_files`` are backed up, the checkout is
    hard-reset to the remote's default branch and the entries are restored; otherwise
    ``origin`` must equal ``repo_url`` and ``git pull --ff-only`` runs.

    Unsafe ``preserve_files`` entries (absolute, with ``..``, or resolving outside the bot
    directory) are never read or written; they are logged and named in the message.

    Args:
        bot: The bot to update.
        protected_dirs: Directories that must never be touched, typically the
            orchestrator's own directory and the config file's directory.
        timeout: Seconds for the whole update, shared by all git commands.
        cancel: Set from another thread to abandon the update: the running git command
            is killed (with its process group) and the outcome is ``"failed"``.

    Returns:
        The outcome. Git and filesystem problems give outcome ``"failed"``; this function
        does not raise for them.
    """
    if bot.repo_url is None or not bot.auto_update:
        return _skipped("auto-update is not enabled for this bot")
    if (refusal := _refuse_directory(bot.directory, protected_dirs)) is not None:
        return refusal
    git = _Git.find(bot.directory, timeout, cancel)
    if git is None:
        return _failed("git executable not found")
    return _run_update(bot, bot.repo_url, git)


def _refuse_directory(directory: Path, protected_dirs: Sequence[Path]) -> UpdateResult | None:
    """The result for a directory git must not work in (missing or protected), else None."""
    if not os.path.isdir(directory):  # unlike Path.is_dir, never raises PermissionError
        return _failed(f"directory {directory} does not exist")
    protected = _protected_by(directory, protected_dirs)
    if protected is not None:
        return _skipped(f"{directory} is or contains protected directory {protected}")
    return None


def _run_update(bot: BotConfig, repo_url: str, git: _Git) -> UpdateResult:
    """The update once the checks passed; unsafe preserve_files entries are logged, left
    alone and named in the message."""
    entries, rejected = _split_preserve_entries(bot.directory, bot.preserve_files)
    for entry, reason in rejected:
        LOGGER.warning("%s: preserve_files entry %r rejected: %s", bot.name, entry, reason)
    updater = _Updater(bot=bot, repo_url=repo_url, git=git, preserve=entries)
    try:
        result = updater.run()
    except (_GitError, OSError) as exc:
        result = _failed(str(exc), old_commit=updater.old_commit)
    if rejected:
        listed = ", ".join(f"{entry!r} ({reason})" for entry, reason in rejected)
        result = attrs.evolve(result, message=f"{result.message}; rejected preserve_files {listed}")
    return result


def rollback_checkout(
    bot: BotConfig,
    commit: str,
    *,
    protected_dirs: Sequence[Path] = (),
    timeout: float = 60.0,
    cancel: threading.Event | None = None,
) -> UpdateResult:
    """Hard-reset *bot*'s checkout to *commit* (a rollback, issue 13.5), keeping its
    ``preserve_files`` entries.

    The same guards as :func:`update_checkout`: protected directories are never touched,
    hooks never run, git never prompts, one time budget. *commit* must exist in the
    repository (it was checked out before the update).

    Returns:
        Outcome ``"rolled-back"`` (``old_commit`` the bad commit, ``new_commit`` *commit*),
        ``"skipped"`` for a protected directory, ``"failed"`` otherwise; never raises.
    """
    directory = bot.directory
    if (refusal := _refuse_directory(directory, protected_dirs)) is not None:
        return refusal
    if not (directory / ".git").exists():
        return _failed(f"{directory} is not a git checkout")
    git = _Git.find(directory, timeout, cancel)
    if git is None:
        return _failed("git executable not found")
    entries, _rejected = _split_preserve_entries(directory, bot.preserve_files)
    old = None
    try:
        old = git.head()
        git.run("cat-file", "-e", f"{commit}^{{commit}}")
        backup = _Backup.create(directory, entries)
        try:
            git.run("reset", "--hard", "--quiet", commit)
        finally:
            backup.restore(bot.name)
        new = git.head()
    except (_GitError, OSError) as exc:
        return _failed(str(exc), old_commit=old)
    return UpdateResult("rolled-back", f"rolled back {_short(old)} -> {_short(new)}", old, new)


def current_commit(directory: Path, *, timeout: float = 10.0) -> str | None:
    """Return the full sha of HEAD in *directory*, or None.

    None means: no git, no repository of its own in *directory*, no commit yet, or git
    failed or timed out. Never raises.
    """
    if not os.path.isdir(directory):  # unlike Path.is_dir, never raises PermissionError
        return None
    git = _Git.find(directory, timeout)
    if git is None:
        return None
    try:
        return git.head()
    except (_GitError, OSError):
        return None


class _GitError(Exception):
    """A git command failed; the message is one line fit for :attr:`UpdateResult.message`."""


@attrs.define
class _Updater:
    """One update attempt; remembers the starting commit for the failure report."""

    bot: BotConfig
    repo_url: str
    git: _Git
    preserve: tuple[str, ...]
    old_commit: str | None = None

    @property
    def directory(self) -> Path:
        return self.bot.directory

    def run(self) -> UpdateResult:
        # `exists` rather than `is_dir`: in worktrees and submodules `.git` is a file.
        if not (self.directory / ".git").exists():
            return self.bootstrap()
        self.old_commit = self.git.head()
        # Only changes to tracked files count (--untracked-files=no). Untracked files are
        # the bot's own data (logs, caches, .env) and never block an update; if the pull
        # would overwrite one, git refuses and the update fails with git's message.
        status = self.git.run("status", "--porcelain", "--untracked-files=no")
        dirty = bool(status.stdout.strip())
        if dirty and not self.bot.force_sync:
            return UpdateResult(
                "skipped",
                "skipped: local changes and force_sync is false",
                self.old_commit,
                self.old_commit,
            )
        self.check_origin()
        if dirty:
            return self.force_sync()
        return self.pull()

    def check_origin(self) -> None:
        completed = self.git.run("config", "--get", "remote.origin.url", check=False)
        origin = completed.stdout.strip()
        if not origin:
            raise _GitError(f"no remote 'origin' configured, expected {self.repo_url}")
        if _normalise_url(origin) != _normalise_url(self.repo_url):
            raise _GitError(f"origin is {origin}, expected {self.repo_url}")

    def pull(self) -> UpdateResult:
        # Naming origin makes git refuse to pull when the current branch tracks another
        # remote or no branch is checked out, so the origin check above stays meaningful.
        # --no-rebase: a user's pull.rebase setting must not turn this into a rebase.
        self.git.run("pull", "--ff-only", "--no-rebase", "--quiet", "origin")
        new = self.git.head()
        if new == self.old_commit:
            return UpdateResult("up-to-date", f"up-to-date at {_short(new)}", self.old_commit, new)
        return UpdateResult(
            "updated", f"updated {_short(self.old_commit)} -> {_short(new)}", self.old_commit, new
        )

    def force_sync(self) -> UpdateResult:
        branch = self.fetch_default_branch()
        self.reset_preserving(branch)
        new = self.git.head()
        if new == self.old_commit:
            message = f"up-to-date at {_short(new)}; local changes discarded"
            return UpdateResult("up-to-date", message, self.old_commit, new)
        message = f"updated {_short(self.old_commit)} -> {_short(new)}; local changes discarded"
        return UpdateResult("updated", message, self.old_commit, new)

    def bootstrap(self) -> UpdateResult:
        git_dir = self.directory / ".git"
        try:
            self.git.run("init", "--quiet")
            self.git.run("remote", "add", "origin", self.repo_url)
            branch = self.fetch_default_branch()
            self.git.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            self.reset_preserving(branch)
            self.git.run("branch", "--quiet", f"--set-upstream-to=origin/{branch}")
        except (_GitError, OSError):
            # A half-made repository would look like a checkout next time and fail in
            # confusing ways; without it the next attempt bootstraps again.
            shutil.rmtree(git_dir, ignore_errors=True)
            raise
        new = self.git.head()
        return UpdateResult(
            "bootstrapped", f"bootstrapped at {_short(new)} from origin/{branch}", None, new
        )

    def fetch_default_branch(self) -> str:
        """Ask origin for its default branch and fetch it into ``origin/<branch>``."""
        fallbacks = [f"refs/heads/{name}" for name in _FALLBACK_BRANCHES]
        listing = self.git.run("ls-remote", "--symref", "origin", "HEAD", *fallbacks)
        branch = _default_branch(listing.stdout)
        if branch is None:
            raise _GitError(
                "remote has no default branch (empty repository, or HEAD not advertised "
                "and no main or master branch)"
            )
        # An explicit refspec: a single-branch clone's configured refspec may not cover it.
        self.git.run(
            "fetch", "--quiet", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
        )
        return branch

    def reset_preserving(self, branch: str) -> None:
        """Hard-reset to ``origin/<branch>``, keeping the ``preserve_files`` entries."""
        backup = _Backup.create(self.directory, self.preserve)
        try:
            self.git.run("reset", "--hard", "--quiet", f"refs/remotes/origin/{branch}")
        finally:
            backup.restore(self.bot.name)


@attrs.define
class _Backup:
    """Copies of the preserve_files entries, in a temporary directory outside the checkout."""

    directory: Path
    location: Path
    saved: list[tuple[str, Path]] = attrs.Factory(list)

    @classmethod
    def create(cls, directory: Path, entries: Sequence[str]) -> _Backup:
        backup = cls(directory, Path(tempfile.mkdtemp(prefix="trio-orch-preserve-")))
        try:
            for index, entry in enumerate(entries):
                source = directory / entry
                if not os.path.lexists(source):
                    continue  # SPEC 7: missing preserved files are ignored
                target = backup.location / str(index)
                _copy_entry(source, target)
                backup.saved.append((entry, target))
        except OSError as exc:
            # Nothing was reset yet: fail the update rather than lose the entry.
            shutil.rmtree(backup.location, ignore_errors=True)
            raise _GitError(f"cannot back up preserve_files: {exc}") from None
        return backup

    def restore(self, bot_name: str) -> None:
        problems = []
        for entry, copy in self.saved:
            # Checked again: the commit just checked out may have turned a parent of the
            # entry into a symlink that leads outside the bot directory.
            reason = _unsafe_entry_reason(self.directory, entry)
            if reason is not None:
                problems.append(f"{entry!r} ({reason})")
                continue
            destination = self.directory / entry
            try:
                _remove_entry(destination)
                destination.parent.mkdir(parents=True, exist_ok=True)
                _copy_entry(copy, destination)
            except OSError as exc:
                problems.append(f"{entry!r} ({exc})")
        if not problems:
            shutil.rmtree(self.location, ignore_errors=True)
            return
        # Keep the copies: they may be the only ones left of the operator's files.
        LOGGER.warning(
            "%s: could not restore preserve_files %s; copies kept in %s",
            bot_name,
            ", ".join(problems),
            self.location,
        )
        raise _GitError(
            f"could not restore preserve_files {', '.join(problems)}; "
            f"copies kept in {self.location}"
        )


@attrs.define
class _Git:
    """Runs git in one directory, within a deadline shared by all its commands."""

    executable: str
    directory: Path
    budget: float
    deadline: float
    env: dict[str, str]
    cancel: threading.Event | None = None

    @classmethod
    def find(
        cls, directory: Path, budget: float, cancel: threading.Event | None = None
    ) -> _Git | None:
        """Return a runner for *directory*, or None if there is no git on PATH."""
        executable = shutil.which("git")
        if executable is None:
            return None
        env = {key: value for key, value in os.environ.items() if key not in _REPOSITORY_ENV}
        env.update(
            # Never prompt. Git itself is covered by the first two; ssh cannot prompt on a
            # terminal because git runs in a new session without a controlling terminal.
            GIT_TERMINAL_PROMPT="0",
            GIT_ASKPASS="",
            SSH_ASKPASS_REQUIRE="never",
            GCM_INTERACTIVE="never",
            # Untranslated messages, so that the one quoted in a result reads the same
            # everywhere.
            LC_ALL="C",
            # A bot directory inside another repository (the orchestrator's, say) must
            # not be taken for that repository.
            GIT_CEILING_DIRECTORIES=os.path.dirname(os.path.realpath(directory)),
        )
        return cls(executable, directory, budget, time.monotonic() + budget, env, cancel)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``git *args`` in the directory with what is left of the time budget.

        Raises:
            _GitError: git could not start, timed out, or (when *check*) exited non-zero.
        """
        command = args[0]
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _GitError(f"git {command} timed out after {self.budget:g}s")
        try:
            with CHILDREN.spawning():  # the manager's reaper must leave git to us
                process = subprocess.Popen(
                    [self.executable, *_GIT_OPTIONS, *args],
                    cwd=self.directory,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    encoding="utf-8",
                    errors="replace",
                    start_new_session=True,
                )
                CHILDREN.own(process.pid)
        except OSError as exc:
            raise _GitError(f"cannot run git {command}: {exc}") from None
        try:
            stdout, stderr = self._communicate(process, command)
        except BaseException:
            _kill_process_group(process)
            raise
        finally:
            CHILDREN.release(process.pid)
        if check and process.returncode != 0:
            raise _GitError(f"git {command}: {_error_summary(stderr, process.returncode)}")
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def _communicate(self, process: subprocess.Popen[str], command: str) -> tuple[str, str]:
        """Wait for *process* in short slices, so a cancel request is seen quickly."""
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise _GitError(f"git {command} timed out after {self.budget:g}s")
            try:
                return process.communicate(timeout=min(remaining, CANCEL_POLL_SECONDS))
            except subprocess.TimeoutExpired:
                if self.cancel is not None and self.cancel.is_set():
                    raise _GitError(f"git {command} cancelled") from None

    def head(self) -> str | None:
        completed = self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        if completed.returncode != 0:
            return None  # no commit yet
        return completed.stdout.strip() or None


def _kill_process_group(process: subprocess.Popen[str]) -> None:
    # git is still unreaped here, so its pid (the group id) cannot have been reused.
    # The whole group goes: git spawns helpers (ssh, remote-https, fetch) that would
    # otherwise keep running, and keep the pipes open, after git itself is killed.
    with contextlib.suppress(ProcessLookupError):  # the group ended by itself meanwhile
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _error_summary(stderr: str, returncode: int) -> str:
    """One line out of git's stderr: its first fatal/error line, else its first paragraph."""
    lines = [line.strip() for line in stderr.splitlines()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    # Advice such as "You are not currently on a branch." spans a wrapped paragraph.
    paragraph: list[str] = []
    for line in lines:
        if line:
            paragraph.append(line)
        elif paragraph:
            break
    return " ".join(paragraph) or f"exited with status {returncode}"


def _default_branch(ls_remote: str) -> str | None:
    """Pick the default branch from ``git ls-remote --symref origin HEAD refs/heads/...``."""
    heads = set()
    for line in ls_remote.splitlines():
        target, _, name = line.partition("\t")
        if name == "HEAD" and target.startswith("ref: refs/heads/"):
            return target.removeprefix("ref: refs/heads/")
        if name.startswith("refs/heads/"):
            heads.add(name.removeprefix("refs/heads/"))
    return next((name for name in _FALLBACK_BRANCHES if name in heads), None)


def _normalise_url(url: str) -> str:
    # Only spellings that obviously name the same repository are made equal.
    url = url.strip().rstrip("/")
    return url.removesuffix(".git").rstrip("/")


def _protected_by(directory: Path, protected_dirs: Sequence[Path]) -> Path | None:
    real = Path(os.path.realpath(directory))
    for protected in protected_dirs:
        candidate = Path(os.path.realpath(protected))
        if candidate == real or real in candidate.parents:
            return protected
    return None


def _split_preserve_entries(
    directory: Path, entries: Sequence[str]
) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """Return the safe entries and the rejected ones with the reason for each."""
    safe = []
    rejected = []
    for entry in entries:
        reason = _unsafe_entry_reason(directory, entry)
        if reason is None:
            safe.append(entry)
        else:
            rejected.append((entry, reason))
    return tuple(safe), rejected


def _unsafe_entry_reason(directory: Path, entry: str) -> str | None:
    """Why *entry* may not be preserved, or None when it is a path inside *directory*."""
    if "\0" in entry:
        return "contains a NUL byte"
    if os.path.isabs(entry):
        return "absolute path"
    if ".." in PurePath(entry).parts:
        return "contains '..'"
    root = os.path.realpath(directory)
    # realpath follows every symlink on the way, so a link anywhere in the entry that
    # leads outside is caught, whether or not the final file exists.
    real = os.path.realpath(os.path.join(root, entry))
    if real == root:
        return "is the bot directory itself"
    if os.path.commonpath([root, real]) != root:
        return "resolves outside the bot directory"
    if PurePath(os.path.relpath(real, root)).parts[0] == ".git":
        return "inside .git"
    return None


def _copy_entry(source: Path, target: Path) -> None:
    # Symlinks are copied as links, never followed: a link inside a preserved directory
    # may point anywhere, and its target is not ours to read or write.
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target, follow_symlinks=False)


def _remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _short(sha: str | None) -> str:
    return sha[:_SHORT_SHA] if sha else "(none)"


def _skipped(reason: str) -> UpdateResult:
    return UpdateResult("skipped", f"skipped: {reason}", None, None)


def _failed(reason: str, *, old_commit: str | None = None) -> UpdateResult:
    return UpdateResult("failed", f"failed: {reason}", old_commit, None)
