"""``trio-orch export``: the same bot_config.yaml as systemd units, a compose file or
Kubernetes manifests (issue 14).

Pure apart from reading the bots' env files (their keys, and with ``include_secrets``
their values): each ``export_*`` function takes a :class:`~trio_orchestrator.config.Config`
and returns an :class:`Export`, the files to write as ``{path: text}`` plus one warning
line per setting that the target cannot express. Nothing is dropped silently: a setting
is either mapped or named in a warning. The CLI writes the files.

The mapping, in short (the README has the table):

- restart policy: systemd ``Restart=``; compose ``restart:``; Kubernetes always restarts.
- ``restart_delay`` and ``restart_backoff``: ``RestartSec=``, ``RestartSteps=`` and
  ``RestartMaxDelaySec=`` (systemd >= 254); compose and Kubernetes use their own delays.
- ``max_restart_attempts`` (+ ``restart_window``): systemd's start limit; compose's
  ``on-failure:N``; Kubernetes never gives up.
- ``stop_signal``/``stop_timeout``: ``KillSignal=``/``TimeoutStopSec=``, compose
  ``stop_signal``/``stop_grace_period``, the image's ``STOPSIGNAL`` and
  ``terminationGracePeriodSeconds``.
- ``max_memory``: ``MemoryMax=``, ``mem_limit``, ``resources.limits.memory``.
- ``heartbeat_timeout``: a Kubernetes liveness probe on the heartbeat file's age; a compose
  healthcheck (which marks the container unhealthy but does not restart it); systemd:
  a warning (its watchdog needs sd_notify).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from trio_orchestrator.config import (
    GlobalSettings,
    RestartPolicy,
    dump_yaml,
    resolve_executable,
)
from trio_orchestrator.envfile import EnvFileError, read_env_file
from trio_orchestrator.errors import ActionFailed

if TYPE_CHECKING:
    from collections.abc import Iterable

    from trio_orchestrator.config import BotConfig, Config

__all__ = [
    "BASE_IMAGE",
    "HEARTBEAT_DIRECTORY",
    "SYSTEMD_VERSION_FOR_BACKOFF",
    "TARGETS",
    "Export",
    "export_compose",
    "export_kubernetes",
    "export_systemd",
    "export_systemd_self",
    "systemd_quote",
]

TARGETS = ("systemd", "compose", "kubernetes")
# The generated Dockerfiles' base: the Python this project supports.
BASE_IMAGE = "python:3.11-slim"
# RestartSteps= and RestartMaxDelaySec= (restart backoff) are new in systemd 254.
SYSTEMD_VERSION_FOR_BACKOFF = 254
# In containers the heartbeat file lives in a memory-backed volume mounted here.
HEARTBEAT_DIRECTORY = "/run/trio-orch"
HEARTBEAT_FILE = f"{HEARTBEAT_DIRECTORY}/heartbeat"
HEARTBEAT_VARIABLE = "TRIO_ORCH_HEARTBEAT_FILE"
# The target (group) unit, the prefix of each bot's unit and of generated image names.
PREFIX = "trio-orch"
APP_DIRECTORY = "/app"
# Extra time the manager gets to stop its bots before systemd kills it (`--self`).
SELF_STOP_MARGIN = 15.0
# Probe settings: Kubernetes' exec probe default timeout (1 s) is short for a loaded node.
PROBE_TIMEOUT = 5
_DEFAULTS = GlobalSettings()
_SIGNALS_SYSTEMD_CALLS_CLEAN = "SIGHUP SIGINT SIGTERM SIGPIPE"


@attrs.frozen
class Export:
    """What an export produces.

    Attributes:
        files: path -> text, for the caller to write.
        warnings: one line per setting the target cannot express, ``bot 'X': key: why``.
        notes: what to do next (install, build images), for people to read.
    """

    files: dict[Path, str]
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@attrs.define
class _Report:
    warnings: list[str] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)

    def warn(self, bot: BotConfig | None, key: str, message: str) -> None:
        where = f"bot {bot.name!r}: {key}" if bot is not None else f"global_settings.{key}"
        self.warnings.append(f"{where}: {message}")

    def result(self, files: dict[Path, str]) -> Export:
        return Export(files, tuple(self.warnings), tuple(self.notes))


def _seconds(value: float) -> str:
    """``5``, ``2.5``, ``0.001``: a number of seconds without an exponent."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _whole_seconds(value: float) -> int:
    return math.ceil(value)


def _restart_delays(bot: BotConfig) -> list[float]:
    """The delays before each of the bot's automatic restarts up to the limit."""
    return [
        min(bot.restart_delay * bot.restart_backoff**attempt, bot.max_restart_delay)
        for attempt in range(bot.max_restart_attempts)
    ]


def _dns_name(name: str) -> str:
    """A bot name as a DNS-1123 label (Kubernetes object names, image names)."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50].strip("-")
    return label or "bot"


def _dns_names(config: Config) -> dict[str, str]:
    names: dict[str, str] = {}
    for bot in config.bots:
        label = _dns_name(bot)
        if label in names.values():
            other = next(name for name, taken in names.items() if taken == label)
            raise ActionFailed(
                f"export: bots {other!r} and {bot!r} both become {label!r} in lower case "
                "(names of images and Kubernetes objects); rename one"
            )
        names[bot] = label
    return names


def _common_warnings(bot: BotConfig, report: _Report, target: str) -> None:
    """Features of the manager itself that no other engine has."""
    hooks = attrs.asdict(bot.hooks)
    for event, command in hooks.items():
        if command is not None:
            report.warn(bot, f"hooks.{event}", f"{target} has no event hooks; not exported")
    if bot.updates_enabled:
        report.warn(
            bot, "repo_url", f"git auto-update before each start is trio-orch's; {target} "
            "runs the code as it is (update it in your deployment instead)"
        )  # fmt: skip
    if bot.rollback_on_failure:
        report.warn(bot, "rollback_on_failure", f"{target} cannot undo an update; not exported")
    if bot.color != "white":
        report.warn(bot, "color", f"{target} logs have no coloured [Name] prefix")
    logs = "journald" if target == "systemd" else "the container runtime's log driver"
    for key in ("log_max_bytes", "log_backups"):
        if getattr(bot, key) != getattr(_DEFAULTS, key):
            report.warn(bot, key, f"output goes to {logs}, which rotates by its own settings")
    if bot.failed_cooldown is not None:
        report.warn(
            bot, "failed_cooldown",
            f"{target} does not start a failed service again after a cooldown",
        )  # fmt: skip


def _global_warnings(config: Config, report: _Report) -> None:
    settings = config.settings
    for key in ("metrics_listen", "web_token"):
        if getattr(settings, key) is not None:
            report.warn(None, key, "the metrics endpoint and status page are trio-orch's")


def _env_file(bot: BotConfig, report: _Report, *, values: bool = False) -> dict[str, str] | None:
    """The bot's env file: its keys (values blanked unless *values*), None if unreadable."""
    if bot.env_file is None:
        return None
    try:
        found = read_env_file(bot.env_file)
    except EnvFileError as exc:
        report.warn(bot, "env_file", f"{exc}; its keys are unknown to the export")
        return None
    return found if values else dict.fromkeys(found, "")


_INLINE_COMMENT = re.compile(r"^\s*[^#\s=]+\s*=\s*[^'\"\s][^\n]*\s#")


def _dotenv_only(path: Path) -> list[str]:
    """Parts of dotenv's grammar (trio-orch's) that systemd's EnvironmentFile= lacks."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    found = []
    lines = text.splitlines()
    if any(line.lstrip().startswith("export ") for line in lines):
        found.append("'export KEY=...' lines")
    if any(_INLINE_COMMENT.match(line) for line in lines):
        found.append("comments after values")
    return found


# ----- systemd -----

_SAFE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def systemd_quote(word: str, *, variables: bool = True) -> str:
    """*word* as one word of a unit file setting, meaning exactly *word*.

    ``%`` (specifiers) becomes ``%%``; with *variables* (``ExecStart=``, where ``$NAME`` is
    expanded) ``$`` becomes ``$$``. Words with other characters are double-quoted with C
    escapes; a lone ``;`` (which would end the command) is ``\\;``.
    """
    text = word.replace("%", "%%")
    if variables:
        text = text.replace("$", "$$")
    if text == ";":
        return "\\;"
    if _SAFE_WORD.fullmatch(text):
        return text
    escaped = "".join(
        _C_ESCAPES.get(char, f"\\x{ord(char):02x}" if ord(char) < 32 else char) for char in text
    )
    return f'"{escaped}"'


def _systemd_path(path: Path | str) -> str:
    return str(path).replace("%", "%%")


def _systemd_line(text: str) -> str:
    return " ".join(text.split()).replace("%", "%%")


def _unit_name(bot: BotConfig) -> str:
    return f"{PREFIX}-{bot.name}.service"


def _program(bot: BotConfig, report: _Report) -> list[str]:
    """The bot's argv with an absolute program, as systemd needs it."""
    argv = bot.argv
    if bot.script is not None:
        argv[1] = os.path.normpath(bot.directory / bot.script)
    word = argv[0]
    if word.startswith("/"):
        return argv
    if "/" in word:
        return [os.path.normpath(bot.directory / word), *argv[1:]]
    found = resolve_executable(word, bot.directory)
    if found is None:
        key = "command" if bot.command is not None else "python"
        report.warn(
            bot, key, f"{word!r} not found now; systemd will look for it on its own PATH "
            "(/usr/local/bin:/usr/bin:...), not trio-orch's"
        )  # fmt: skip
        return argv
    return [found, *argv[1:]]


def _start_limit(bot: BotConfig) -> tuple[int, int]:
    """``StartLimitBurst=``/``StartLimitIntervalSec=`` for max_restart_attempts.

    systemd counts starts within an interval; trio-orch counts consecutive automatic
    restarts (or those within ``restart_window``). The first start plus that many restarts
    is the burst; without a window the interval is the time those runs take when each
    crashes before it counts as healthy (a longer run resets trio-orch's count).
    """
    burst = bot.max_restart_attempts + 1
    if bot.restart_window is not None:
        return burst, _whole_seconds(bot.restart_window)
    interval = sum(_restart_delays(bot)) + burst * bot.healthy_uptime
    return burst, max(1, _whole_seconds(interval))


def _backoff_steps(bot: BotConfig) -> int | None:
    """``RestartSteps=``: systemd grows the delay exponentially from RestartSec= to
    RestartMaxDelaySec= in this many steps, as ``restart_delay * restart_backoff**n`` does."""
    if bot.restart_backoff <= 1 or bot.restart_delay <= 0:
        return None
    if bot.max_restart_delay <= bot.restart_delay:
        return None
    ratio = bot.max_restart_delay / bot.restart_delay
    return max(1, math.ceil(math.log(ratio) / math.log(bot.restart_backoff)))


_SYSTEMD_RESTART = {
    RestartPolicy.ON_FAILURE: "on-failure",
    RestartPolicy.ALWAYS: "always",
    RestartPolicy.NEVER: "no",
}


def _systemd_environment(bot: BotConfig, report: _Report) -> list[str]:
    """``Environment=`` lines for the bot's env and ``EnvironmentFile=`` for its env_file."""
    lines = [
        f"Environment={systemd_quote(f'{name}={value}', variables=False)}"
        for name, value in bot.env
    ]
    if bot.env_file is None:
        return lines
    lines.append(f"EnvironmentFile={_systemd_path(bot.env_file)}")
    keys = _env_file(bot, report) or {}
    both = sorted(set(keys) & {name for name, _ in bot.env})
    if both:
        report.warn(
            bot, "env", f"{', '.join(both)} also in env_file: systemd's EnvironmentFile= "
            "wins over Environment=, trio-orch's env wins over env_file; keep one"
        )  # fmt: skip
    for feature in _dotenv_only(bot.env_file):
        report.warn(bot, "env_file", f"uses {feature}, which systemd reads differently")
    return lines


def _systemd_restart(bot: BotConfig, report: _Report) -> list[str]:
    lines = [f"Restart={_SYSTEMD_RESTART[bot.restart]}"]
    if bot.restart is RestartPolicy.ON_FAILURE:
        # systemd counts deaths by these signals as clean exits; trio-orch restarts them.
        lines.append(f"RestartForceExitStatus={_SIGNALS_SYSTEMD_CALLS_CLEAN}")
    lines.append(f"RestartSec={_seconds(bot.restart_delay)}")
    steps = _backoff_steps(bot)
    if steps is not None:
        lines += [f"RestartSteps={steps}", f"RestartMaxDelaySec={_seconds(bot.max_restart_delay)}"]
        report.warn(
            bot, "restart_backoff", f"RestartSteps=/RestartMaxDelaySec= need systemd >= "
            f"{SYSTEMD_VERSION_FOR_BACKOFF}; older versions ignore them (fixed RestartSec=)"
        )  # fmt: skip
    elif bot.restart_backoff > 1:
        report.warn(bot, "restart_backoff", "no growth possible from restart_delay 0; ignored")
    return lines


def _systemd_stop(bot: BotConfig) -> list[str]:
    # stop_timeout 0 means SIGKILL at once; TimeoutStopSec=0 would mean "never".
    stop = _seconds(bot.stop_timeout) if bot.stop_timeout > 0 else "1ms"
    return [
        "KillMode=control-group",
        f"KillSignal={bot.stop_signal.name}",
        f"TimeoutStopSec={stop}",
    ]


def _systemd_unit(bot: BotConfig, config: Config, user: str | None, report: _Report) -> str:
    _common_warnings(bot, report, "systemd")
    burst, interval = _start_limit(bot)
    unit = [
        f"# Generated by `trio-orch export systemd` from {config.path} (bot {bot.name}).",
        "[Unit]",
        f"Description=trio-orch bot {bot.name}"
        + (f": {_systemd_line(bot.description)}" if bot.description.strip() else ""),
        f"PartOf={PREFIX}.target",
        f"StartLimitIntervalSec={interval}",
        f"StartLimitBurst={burst}",
        "",
        "[Service]",
        "Type=simple",
        f"WorkingDirectory={_systemd_path(bot.directory)}",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    unit += _systemd_environment(bot, report)
    unit.append("ExecStart=" + " ".join(systemd_quote(word) for word in _program(bot, report)))
    if user is not None:
        unit.append(f"User={_systemd_path(user)}")
    unit += _systemd_restart(bot, report)
    unit += _systemd_stop(bot)
    if bot.max_memory is not None:
        unit.append(f"MemoryMax={bot.max_memory}")
    if bot.heartbeat_timeout is not None:
        report.warn(
            bot, "heartbeat_timeout", "not exported: systemd's WatchdogSec= needs the bot to "
            "call sd_notify(WATCHDOG=1), not trio_orchestrator.heartbeat.beat()"
        )  # fmt: skip
    if bot.autostart:
        unit += ["", "[Install]", f"WantedBy={PREFIX}.target"]
    return "\n".join(unit) + "\n"


def export_systemd(config: Config, directory: Path, *, user: str | None = None) -> Export:
    """One ``trio-orch-<Bot>.service`` per bot and ``trio-orch.target`` that wants the
    bots with ``autostart`` (``systemctl enable --now trio-orch.target``)."""
    report = _Report()
    _global_warnings(config, report)
    files = {
        directory / _unit_name(bot): _systemd_unit(bot, config, user, report)
        for bot in config.bots.values()
    }
    wanted = [_unit_name(bot) for bot in config.bots.values() if bot.autostart]
    target = [
        f"# Generated by `trio-orch export systemd` from {config.path}.",
        "[Unit]",
        f"Description=trio-orch bots of {_systemd_path(config.path)}",
        *(f"Wants={name}" for name in wanted),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    files[directory / f"{PREFIX}.target"] = "\n".join(target) + "\n"
    names = " ".join(path.name for path in files)
    report.notes += [
        f"sudo cp {names} /etc/systemd/system/  (from {directory})",
        f"sudo systemctl daemon-reload && sudo systemctl enable --now {PREFIX}.target",
        f"journalctl -u '{PREFIX}-*' -f   # the bots' output",
    ]
    return report.result(files)


def export_systemd_self(
    config: Config,
    directory: Path,
    *,
    user: str | None = None,
    command: Iterable[str] | None = None,
) -> Export:
    """``trio-orch.service``: trio-orch itself (``start_all``) as a service started at boot.

    Args:
        command: the argv that runs the manager; default
            ``[sys.executable, -m, trio_orchestrator, --config, <config>, start_all]``.
    """
    argv = list(
        command
        or [sys.executable, "-m", "trio_orchestrator", "--config", str(config.path), "start_all"]
    )
    path = directory / f"{PREFIX}.service"
    report = _Report(
        notes=[
            f"sudo cp {path} /etc/systemd/system/",
            f"sudo systemctl daemon-reload && sudo systemctl enable --now {path.name}",
        ]
    )
    return report.result({path: _manager_unit(config, argv, user)})


def _manager_unit(config: Config, argv: list[str], user: str | None) -> str:
    """The unit that runs the manager with *argv*."""
    longest = max((bot.stop_timeout for bot in config.bots.values()), default=0.0)
    unit = [
        f"# Generated by `trio-orch export systemd --self` from {config.path}.",
        "[Unit]",
        f"Description=trio-orch: the bots of {_systemd_path(config.path)}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"WorkingDirectory={_systemd_path(config.directory)}",
        "Environment=PYTHONUNBUFFERED=1",
        "ExecStart=" + " ".join(systemd_quote(word) for word in argv),
        *([f"User={_systemd_path(user)}"] if user is not None else []),
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM to the manager only: it stops its bots itself (stop_signal, stop_timeout);
        # whatever is left when the timeout ends is killed.
        "KillMode=mixed",
        f"TimeoutStopSec={_seconds(longest + SELF_STOP_MARGIN)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(unit) + "\n"


# ----- containers (compose, Kubernetes) -----


@attrs.frozen
class _Images:
    """Where a container export gets each bot's image: ``--image`` (*template*), or one it
    builds from a generated Dockerfile, which goes into *files* beside *output*."""

    config: Config
    output: Path
    names: dict[str, str]  # bot name -> DNS name
    template: str | None
    files: dict[Path, str]

    def given(self, bot: BotConfig) -> str | None:
        """``--image`` with ``{name}`` filled in, or None when the export builds one."""
        if self.template is None:
            return None
        return self.template.replace("{name}", self.names[bot.name])

    def built(self, bot: BotConfig) -> str:
        return f"{PREFIX}-{self.names[bot.name]}"

    def write_dockerfile(self, bot: BotConfig, report: _Report) -> Path:
        """Add the Python bot's Dockerfile to the files; return its path."""
        dockerfile = _dockerfile_path(bot, self.output)
        self.files[dockerfile] = _dockerfile(bot, self.config)
        if bot.heartbeat_timeout is not None:
            report.warn(
                bot,
                "heartbeat_timeout",
                "the bot imports trio_orchestrator.heartbeat, which "
                f"{dockerfile.name} does not install: add trio-orch to its requirements.txt",
            )
        return dockerfile


def _container_argv(bot: BotConfig, report: _Report) -> list[str]:
    """The bot's argv inside the container, whose working directory is the bot's."""
    if bot.command is not None:
        return list(bot.command)
    if bot.python != sys.executable:
        report.warn(bot, "python", f"{bot.python!r} is a host path; the image's python runs")
    return ["python", bot.script or "", *bot.args]


def _heartbeat_wrapped(argv: list[str]) -> list[str]:
    """Touch the heartbeat file, then become the bot: the grace period starts at start."""
    return ["sh", "-c", f'touch "${HEARTBEAT_VARIABLE}" && exec "$@"', "sh", *argv]


def _heartbeat_test(bot: BotConfig) -> str:
    """A shell test that passes while the heartbeat file is at most heartbeat_timeout old."""
    timeout = _whole_seconds(bot.heartbeat_timeout or 0)
    return f'test $(( $(date +%s) - $(stat -c %Y "${HEARTBEAT_VARIABLE}") )) -le {timeout}'


def _heartbeat_grace(bot: BotConfig) -> int:
    grace = bot.heartbeat_grace if bot.heartbeat_grace is not None else bot.heartbeat_timeout
    return _whole_seconds(grace or 0)


def _probe_period(bot: BotConfig) -> int:
    """How often to probe: a few times per timeout, between 1 and 10 s."""
    return min(10, max(1, _whole_seconds((bot.heartbeat_timeout or 0) / 3)))


def _dockerfile(bot: BotConfig, config: Config) -> str:
    argv = ["python", bot.script or "", *bot.args]
    lines = [
        f"# Generated by `trio-orch export` for bot {bot.name} of {config.path}.",
        f"# Build context: the bot's directory ({bot.directory}).",
        f"FROM {BASE_IMAGE}",
        f"WORKDIR {APP_DIRECTORY}",
        "COPY . .",
        "RUN if [ -f requirements.txt ]; then pip install --no-cache-dir -r requirements.txt; fi",
        "ENV PYTHONUNBUFFERED=1",
    ]
    if bot.stop_signal is not signal.SIGTERM:
        lines.append(f"STOPSIGNAL {bot.stop_signal.name}")
    lines.append("CMD " + json.dumps(argv))
    return "\n".join(lines) + "\n"


def _dockerfile_path(bot: BotConfig, output: Path) -> Path:
    return output.parent / f"Dockerfile.{bot.name}"


def _relative(path: Path, base: Path) -> str:
    """*path* relative to *base* as ``./x`` when inside it, else absolute."""
    try:
        inside = path.relative_to(base)
    except ValueError:
        return str(path)
    return f"./{inside}" if str(inside) != "." else "."


def _escape_dollars(value: Any) -> Any:
    """Compose interpolates ``$NAME`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escape_dollars(item) for item in value]
    if isinstance(value, dict):
        return {key: _escape_dollars(item) for key, item in value.items()}
    return value


def _warn_needs_image(bot: BotConfig, report: _Report, image: str) -> None:
    report.warn(
        bot, "command", f"needs an image that provides {bot.command[0]!r} (a command bot); "
        f"pass --image, or build {image!r} yourself"
    )  # fmt: skip


def _container_command(bot: BotConfig, report: _Report) -> list[str]:
    """The container's argv: the bot's, behind the heartbeat file's touch when it has one."""
    argv = _container_argv(bot, report)
    if bot.heartbeat_timeout is not None:
        return _heartbeat_wrapped(argv)
    return argv


def _bot_labels(bot: BotConfig, prefix: str) -> dict[str, str]:
    """The bot's name and description as compose labels or Kubernetes annotations."""
    labels = {f"{prefix}bot": bot.name}
    if bot.description:
        labels[f"{prefix}description"] = bot.description
    return labels


def _compose_image(bot: BotConfig, images: _Images, report: _Report) -> dict[str, Any]:
    """``image`` (and ``build`` with a generated Dockerfile for a Python bot without one)."""
    named = images.given(bot)
    if named is not None:
        return {"image": named}
    built = images.built(bot)
    if not bot.is_python:
        _warn_needs_image(bot, report, built)
        return {"image": built}
    dockerfile = images.write_dockerfile(bot, report)
    context = {
        "context": _relative(bot.directory, images.output.parent),
        "dockerfile": os.path.relpath(dockerfile, bot.directory),
    }
    return {"build": context, "image": built}


def _compose_restart(bot: BotConfig, report: _Report) -> str:
    if bot.restart is RestartPolicy.ON_FAILURE and bot.max_restart_attempts == 0:
        restart = "no"  # docker reads on-failure:0 as "no limit"
    elif bot.restart is RestartPolicy.ON_FAILURE:
        restart = f"on-failure:{bot.max_restart_attempts}"
        if bot.restart_window is not None:
            report.warn(bot, "restart_window", "docker counts every restart; no window")
    elif bot.restart is RestartPolicy.ALWAYS:
        # Like trio-orch, a container the user stopped stays stopped.
        restart = "unless-stopped"
        report.warn(bot, "max_restart_attempts", "docker never gives up on restart: unless-stopped")
    else:
        restart = "no"
    if restart != "no":
        report.warn(
            bot, "restart_delay", "docker waits its own delay (100 ms, doubling) before a "
            "restart; restart_delay/restart_backoff are not expressible"
        )  # fmt: skip
    return restart


def _compose_environment(bot: BotConfig) -> dict[str, str]:
    environment = {"PYTHONUNBUFFERED": "1", **dict(bot.env)}
    if bot.heartbeat_timeout is not None:
        environment[HEARTBEAT_VARIABLE] = HEARTBEAT_FILE
    return environment


def _warn_dollars_in_env_file(bot: BotConfig, report: _Report) -> None:
    values = _env_file(bot, report, values=True) or {}  # warns when unreadable
    dollars = sorted(key for key, value in values.items() if "$" in value)
    if dollars:
        report.warn(
            bot, "env_file", f"{', '.join(dollars)}: docker compose v2 expands $NAME in "
            "env_file values, trio-orch does not; write $$ there"
        )  # fmt: skip


def _healthcheck(bot: BotConfig) -> dict[str, Any]:
    return {
        "test": ["CMD", "sh", "-c", _heartbeat_test(bot)],
        "interval": f"{_probe_period(bot)}s",
        "timeout": f"{PROBE_TIMEOUT}s",
        "retries": 1,
        "start_period": f"{_heartbeat_grace(bot)}s",
    }


def _compose_service(bot: BotConfig, images: _Images, report: _Report) -> dict[str, Any]:
    _common_warnings(bot, report, "compose")
    base = images.output.parent
    service = _compose_image(bot, images, report)
    service["working_dir"] = APP_DIRECTORY
    service["command"] = _container_command(bot, report)
    # An init as PID 1: a bot there would ignore SIGTERM unless it handles it.
    service["init"] = True
    if not bot.autostart:
        service["profiles"] = ["manual"]
    service["restart"] = _compose_restart(bot, report)
    service["stop_signal"] = bot.stop_signal.name
    service["stop_grace_period"] = f"{_seconds(bot.stop_timeout)}s"
    service["environment"] = _compose_environment(bot)
    if bot.env_file is not None:
        service["env_file"] = [_relative(bot.env_file, base)]
        _warn_dollars_in_env_file(bot, report)
    service["volumes"] = [
        {"type": "bind", "source": _relative(bot.directory, base), "target": APP_DIRECTORY}
    ]
    if bot.max_memory is not None:
        service["mem_limit"] = bot.max_memory
    if bot.heartbeat_timeout is not None:
        service["tmpfs"] = [HEARTBEAT_DIRECTORY]
        service["healthcheck"] = _healthcheck(bot)
        report.warn(
            bot, "heartbeat_timeout", "a compose healthcheck marks a hung bot unhealthy but "
            "does not restart it (use an autoheal container or Kubernetes)"
        )  # fmt: skip
    service["labels"] = _bot_labels(bot, "trio-orch.")
    return _escape_dollars(service)


def export_compose(config: Config, output: Path, *, image: str | None = None) -> Export:
    """A compose file (format 2.4, which docker compose v1 and v2 read) with one service per
    bot, and a Dockerfile beside it for each Python bot when *image* is None.

    *image* may hold ``{name}``, replaced by the bot's name in lower case.
    """
    report = _Report()
    _global_warnings(config, report)
    images = _Images(config, output, _dns_names(config), image, files={})
    services = {bot.name: _compose_service(bot, images, report) for bot in config.bots.values()}
    header = f"# Generated by `trio-orch export compose` from {config.path}.\n"
    document = {"version": "2.4", "services": services}
    files = {output: header + dump_yaml(document), **images.files}
    report.notes += [
        f"docker compose -f {output} up -d --build",
        f"docker compose -f {output} logs -f",
    ]
    return report.result(files)


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PREFIX}


def _secret(
    bot: BotConfig, name: str, include_secrets: bool, report: _Report
) -> dict[str, Any] | None:
    values = _env_file(bot, report, values=include_secrets)
    if values is None and bot.env_file is None:
        return None
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-env", "labels": _labels(name)},
        "type": "Opaque",
    }
    if include_secrets and values is not None:
        secret["data"] = {
            key: base64.b64encode(value.encode()).decode("ascii") for key, value in values.items()
        }
    else:
        secret["stringData"] = dict(values or {})
        report.warn(
            bot, "env_file", f"Secret {name}-env has the keys only; fill it with `kubectl "
            f"create secret generic {name}-env --from-env-file={bot.env_file} --dry-run=client "
            "-o yaml | kubectl apply -f -` (it takes quotes literally) or export with "
            "--include-secrets (which reads the file as trio-orch does)"
        )  # fmt: skip
    return secret


def _kubernetes_image(bot: BotConfig, images: _Images, report: _Report) -> dict[str, Any]:
    """``image``: ``--image``, or one to build and push (a Dockerfile for a Python bot)."""
    named = images.given(bot)
    if named is not None:
        if bot.stop_signal is not signal.SIGTERM:
            report.warn(
                bot, "stop_signal", f"a Deployment cannot choose the stop signal: the image's "
                f"STOPSIGNAL ({bot.stop_signal.name}) must say it"
            )  # fmt: skip
        return {"image": named}
    built = f"{images.built(bot)}:latest"
    if bot.is_python:
        dockerfile = images.write_dockerfile(bot, report)
        report.notes.append(
            f"docker build -t {built} -f {dockerfile} {bot.directory}"
            "   # then push it where the cluster pulls from"
        )
    else:
        _warn_needs_image(bot, report, built)
    return {"image": built, "imagePullPolicy": "IfNotPresent"}


def _kubernetes_env(bot: BotConfig) -> list[dict[str, str]]:
    # Kubernetes expands $(NAME) in env values, as in the command; $$ is a literal $.
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    env += [{"name": key, "value": value.replace("$", "$$")} for key, value in bot.env]
    if bot.heartbeat_timeout is not None:
        env.append({"name": HEARTBEAT_VARIABLE, "value": HEARTBEAT_FILE})
    return env


def _liveness_probe(bot: BotConfig) -> dict[str, Any]:
    return {
        "exec": {"command": ["sh", "-c", _heartbeat_test(bot)]},
        "initialDelaySeconds": _heartbeat_grace(bot),
        "periodSeconds": _probe_period(bot),
        "timeoutSeconds": PROBE_TIMEOUT,
        "failureThreshold": 1,
    }


def _warn_kubernetes_restarts(bot: BotConfig, report: _Report) -> None:
    if bot.restart is not RestartPolicy.ALWAYS:
        report.warn(
            bot, "restart", f"{bot.restart.value}: a Deployment's pods always restart "
            "(restartPolicy: Always), clean exits too"
        )  # fmt: skip
    report.warn(
        bot, "max_restart_attempts", "Kubernetes never gives up (CrashLoopBackOff); "
        "restart_delay/restart_backoff are replaced by its backoff (10 s doubling to 5 min)"
    )  # fmt: skip


def _pod_spec(bot: BotConfig, container: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = {
        # The pause container is PID 1, so the bot is not: PID 1 ignores SIGTERM unless
        # it handles it.
        "shareProcessNamespace": True,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": _whole_seconds(bot.stop_timeout),
        "containers": [container],
    }
    if bot.heartbeat_timeout is not None:
        container["livenessProbe"] = _liveness_probe(bot)
        container["volumeMounts"] = [{"name": "heartbeat", "mountPath": HEARTBEAT_DIRECTORY}]
        pod["volumes"] = [{"name": "heartbeat", "emptyDir": {"medium": "Memory"}}]
    return pod


def _deployment(bot: BotConfig, images: _Images, report: _Report) -> dict[str, Any]:
    _common_warnings(bot, report, "Kubernetes")
    name = images.names[bot.name]
    container: dict[str, Any] = {"name": name, **_kubernetes_image(bot, images, report)}
    container["workingDir"] = APP_DIRECTORY
    # Kubernetes expands $(NAME) in the command; $$ is a literal $.
    container["command"] = [word.replace("$", "$$") for word in _container_command(bot, report)]
    container["env"] = _kubernetes_env(bot)
    if bot.env_file is not None:
        # Values win over envFrom in Kubernetes, as env wins over env_file in trio-orch.
        container["envFrom"] = [{"secretRef": {"name": f"{name}-env"}}]
    if bot.max_memory is not None:
        container["resources"] = {"limits": {"memory": str(bot.max_memory)}}
    pod = _pod_spec(bot, container)
    _warn_kubernetes_restarts(bot, report)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": _labels(name),
            "annotations": _bot_labels(bot, "trio-orch/"),
        },
        "spec": {
            # Never two copies of a singleton bot; autostart: false bots are scaled to 0
            # (`kubectl scale deployment/NAME --replicas=1` starts one).
            "replicas": 1 if bot.autostart else 0,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": _labels(name)},
            "template": {"metadata": {"labels": _labels(name)}, "spec": pod},
        },
    }


def export_kubernetes(
    config: Config,
    output: Path,
    *,
    image: str | None = None,
    include_secrets: bool = False,
) -> Export:
    """Per bot a Deployment (and a Secret for its env_file) in one multi-document file.

    Secrets hold the env file's keys with empty values unless *include_secrets*; env file
    values never go into a Deployment.
    """
    report = _Report()
    _global_warnings(config, report)
    images = _Images(config, output, _dns_names(config), image, files={})
    documents: list[dict[str, Any]] = []
    for bot in config.bots.values():
        secret = _secret(bot, images.names[bot.name], include_secrets, report)
        if secret is not None:
            documents.append(secret)
        documents.append(_deployment(bot, images, report))
    header = f"# Generated by `trio-orch export kubernetes` from {config.path}.\n"
    files = {output: header + dump_yaml(*documents), **images.files}
    report.notes.append(f"kubectl apply -f {output}")
    return report.result(files)
