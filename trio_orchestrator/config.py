"""The configuration file, parsed once into frozen attrs classes.

Every value is checked here, so the rest of the program can trust a :class:`Config`.
Relative paths resolve against the config file's directory (SPEC 2), never the cwd.
"""

from __future__ import annotations

import os.path
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from trio_orchestrator.errors import ConfigError, UnknownBotError

__all__ = [
    "COLORS",
    "RESTART_POLICIES",
    "BotConfig",
    "Config",
    "GlobalSettings",
    "Hooks",
    "load_config",
    "parse_size",
]

COLORS = ("red", "green", "yellow", "blue", "magenta", "cyan", "white")
RESTART_POLICIES = ("on-failure", "always", "never")
BOT_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# A run shorter than this is not "healthy" whatever the user asks: a bot that crashes
# within a second must never reset its consecutive-restart count.
MIN_HEALTHY_UPTIME = 1.0

_MISSING = object()

# ----- provisional recovery keys (issue 13); superseded by the config rewrite -----
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kKmMgGtT])(i?)[bB]?)?")
HOOK_EVENTS = ("on_exit", "on_restart", "on_failed", "on_update")


def parse_size(value: object) -> int:
    """``300MB`` (10^6), ``300MiB``/``300M`` (2^20), ``512k``, ``1G`` or an int of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE_RE.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"not a size: {value!r} (use e.g. 300MB, 300MiB, 512k or bytes)")
    number, unit, binary = match.groups()
    decimal = unit is not None and not binary and str(value).strip()[-1] in "bB"
    exponent = "kmgt".index(unit.lower()) + 1 if unit else 0
    return round(float(number) * (1000 if decimal else 1024) ** exponent)


@attrs.frozen
class Hooks:
    """Commands run on bot events (argv tuples, None for none); a bot's own hook wins."""

    on_exit: tuple[str, ...] | None = None
    on_restart: tuple[str, ...] | None = None
    on_failed: tuple[str, ...] | None = None
    on_update: tuple[str, ...] | None = None

    def merged(self, other: Hooks) -> Hooks:
        ours = attrs.asdict(other, recurse=False, filter=lambda _field, value: value is not None)
        return attrs.evolve(self, **ours)


@attrs.frozen
class GlobalSettings:
    log_directory: Path
    max_restart_attempts: int = 3
    restart_delay: float = 5.0
    stop_timeout: float = 10.0
    command_poll_interval: float = 2.0
    healthy_uptime: float = 5.0
    git_timeout: float = 60.0
    restart_backoff: float = 1.0
    max_restart_delay: float = 300.0
    restart_window: float | None = None
    failed_cooldown: float | None = None
    hooks: Hooks = Hooks()
    hook_timeout: float = 30.0
    rollback_window: float = 600.0


@attrs.frozen
class BotConfig:
    """One bot, with the global defaults already applied to its overridable settings."""

    name: str
    script: str
    directory: Path
    args: tuple[str, ...] = ()
    python: str = sys.executable
    env: tuple[tuple[str, str], ...] = ()
    color: str = "white"
    description: str = ""
    autostart: bool = True
    restart: str = "on-failure"
    max_restart_attempts: int = 3
    restart_delay: float = 5.0
    stop_timeout: float = 10.0
    healthy_uptime: float = 5.0
    repo_url: str | None = None
    auto_update: bool = False
    force_sync: bool = False
    preserve_files: tuple[str, ...] = ()
    restart_backoff: float = 1.0
    max_restart_delay: float = 300.0
    restart_window: float | None = None
    failed_cooldown: float | None = None
    heartbeat_timeout: float | None = None
    heartbeat_grace: float | None = None
    max_memory: int | None = None
    hooks: Hooks = Hooks()
    rollback_on_failure: bool = False
    rollback_window: float = 600.0

    @property
    def argv(self) -> list[str]:
        return [self.python, self.script, *self.args]

    @property
    def updates_enabled(self) -> bool:
        return self.repo_url is not None and self.auto_update


@attrs.frozen
class Config:
    path: Path
    settings: GlobalSettings
    bots: Mapping[str, BotConfig]
    warnings: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        return self.path.parent

    def bot(self, name: str) -> BotConfig:
        try:
            return self.bots[name]
        except KeyError:
            raise UnknownBotError(name) from None

    @classmethod
    def from_mapping(cls, data: object, path: Path) -> Config:
        return _Parser(path).parse(data)


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML file at *path*.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or not a valid config.
    """
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read: {exc}") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, f"YAML syntax error{where}: {problem}") from None
    return Config.from_mapping(data, path)


_GLOBAL_KEYS = {
    "log_directory",
    "max_restart_attempts",
    "restart_delay",
    "stop_timeout",
    "command_poll_interval",
    "healthy_uptime",
    "git_timeout",
    "restart_backoff",
    "max_restart_delay",
    "restart_window",
    "failed_cooldown",
    "hooks",
    "hook_timeout",
    "rollback_window",
}
_BOT_KEYS = {
    "script",
    "directory",
    "args",
    "python",
    "env",
    "color",
    "description",
    "autostart",
    "restart",
    "max_restart_attempts",
    "restart_delay",
    "stop_timeout",
    "repo_url",
    "auto_update",
    "force_sync",
    "preserve_files",
    "restart_backoff",
    "max_restart_delay",
    "restart_window",
    "failed_cooldown",
    "heartbeat_timeout",
    "heartbeat_grace",
    "max_memory",
    "hooks",
    "rollback_on_failure",
    "rollback_window",
}


@attrs.define
class _Parser:
    """Walks the YAML document once, collecting warnings and raising the first error."""

    path: Path
    warnings: list[str] = attrs.Factory(list)

    def error(self, message: str, bot: str | None = None, key: str | None = None) -> ConfigError:
        return ConfigError(self.path, message, bot=bot, key=key)

    def warn_unknown(self, section: Mapping[str, Any], known: set[str], bot: str | None) -> None:
        for key in section:
            if key not in known:
                where = f"bot {bot!r}" if bot else "global_settings"
                self.warnings.append(f"{self.path}: {where}: unknown key {key!r} ignored")

    def parse(self, data: object) -> Config:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error("top level must be a mapping with 'bots' and 'global_settings'")
        for key in data:
            if key not in ("bots", "global_settings"):
                self.warnings.append(f"{self.path}: unknown top-level key {key!r} ignored")
        settings = self.parse_settings(data.get("global_settings"))
        raw_bots = data.get("bots")
        if raw_bots is None:
            raw_bots = {}
        if not isinstance(raw_bots, dict):
            raise self.error("must be a mapping of bot names to settings", key="bots")
        bots = {}
        for name, raw in raw_bots.items():
            bot = self.parse_bot(name, raw, settings)
            bots[bot.name] = bot
        return Config(path=self.path, settings=settings, bots=bots, warnings=tuple(self.warnings))

    def parse_settings(self, raw: object) -> GlobalSettings:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise self.error("must be a mapping", key="global_settings")
        self.warn_unknown(raw, _GLOBAL_KEYS, None)

        def get(key: str, kind: type, default: Any, minimum: float = 0) -> Any:
            return self.value(raw, key, kind, default, bot=None, minimum=minimum)

        log_dir = get("log_directory", str, "logs")
        healthy = get("healthy_uptime", float, 5.0, minimum=MIN_HEALTHY_UPTIME)
        return GlobalSettings(
            log_directory=self.resolve(log_dir),
            max_restart_attempts=get("max_restart_attempts", int, 3),
            restart_delay=get("restart_delay", float, 5.0),
            stop_timeout=get("stop_timeout", float, 10.0),
            command_poll_interval=get("command_poll_interval", float, 2.0, minimum=0.05),
            healthy_uptime=healthy,
            git_timeout=get("git_timeout", float, 60.0, minimum=1),
            restart_backoff=get("restart_backoff", float, 1.0, minimum=1),
            max_restart_delay=get("max_restart_delay", float, 300.0),
            restart_window=get("restart_window", float, None),
            failed_cooldown=get("failed_cooldown", float, None),
            hooks=self.parse_hooks(get("hooks", dict, {}), None),
            hook_timeout=get("hook_timeout", float, 30.0),
            rollback_window=get("rollback_window", float, 600.0),
        )

    def parse_hooks(self, raw: Mapping[str, Any], bot: str | None) -> Hooks:
        commands = {}
        for event, command in raw.items():
            if event not in HOOK_EVENTS or not isinstance(command, (str, list)):
                raise self.error(f"bad hook {event!r}: {command!r}", bot=bot, key="hooks")
            argv = shlex.split(command) if isinstance(command, str) else command
            commands[event] = tuple(str(arg) for arg in argv) or None
        return Hooks(**commands)

    def parse_bot(self, name: object, raw: object, settings: GlobalSettings) -> BotConfig:
        if not isinstance(name, str) or not BOT_NAME_RE.fullmatch(name):
            raise self.error(
                f"bad bot name {name!r}: use only letters, digits, '_', '.' and '-'",
                bot=str(name),
            )
        if not isinstance(raw, dict):
            raise self.error("must be a mapping of settings", bot=name)
        self.warn_unknown(raw, _BOT_KEYS, name)

        def get(key: str, kind: type, default: Any = _MISSING, minimum: float = 0) -> Any:
            return self.value(raw, key, kind, default, bot=name, minimum=minimum)

        script = get("script", str)
        if not script:
            raise self.error("must not be empty", bot=name, key="script")
        directory = get("directory", str)
        if not directory:
            raise self.error("must not be empty", bot=name, key="directory")
        args = get("args", list, [])
        for arg in args:
            if not isinstance(arg, (str, int, float)) or isinstance(arg, bool):
                raise self.error(f"entries must be strings, got {arg!r}", bot=name, key="args")
        env = get("env", dict, {})
        env_pairs = []
        for key, value in env.items():
            if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
                raise self.error(
                    f"entries must be NAME: value strings, got {key!r}: {value!r}",
                    bot=name,
                    key="env",
                )
            env_pairs.append((key, str(value)))
        color = get("color", str, "white").lower()
        if color not in COLORS:
            raise self.error(
                f"unknown color {color!r} (use one of {', '.join(COLORS)})", bot=name, key="color"
            )
        restart = get("restart", str, "on-failure")
        if restart not in RESTART_POLICIES:
            raise self.error(
                f"unknown policy {restart!r} (use one of {', '.join(RESTART_POLICIES)})",
                bot=name,
                key="restart",
            )
        repo_url = get("repo_url", str, None)
        preserve = get("preserve_files", list, [])
        for entry in preserve:
            if not isinstance(entry, str) or not entry:
                raise self.error(
                    f"entries must be non-empty strings, got {entry!r}",
                    bot=name,
                    key="preserve_files",
                )
        python = get("python", str, None)
        return BotConfig(
            name=name,
            script=script,
            directory=self.resolve(directory),
            args=tuple(str(arg) for arg in args),
            python=self.resolve_python(python) if python else sys.executable,
            env=tuple(env_pairs),
            color=color,
            description=str(get("description", str, "") or ""),
            autostart=get("autostart", bool, True),
            restart=restart,
            max_restart_attempts=self.override(
                get("max_restart_attempts", int, None), settings.max_restart_attempts
            ),
            restart_delay=self.override(get("restart_delay", float, None), settings.restart_delay),
            stop_timeout=self.override(get("stop_timeout", float, None), settings.stop_timeout),
            healthy_uptime=settings.healthy_uptime,
            repo_url=repo_url or None,
            auto_update=get("auto_update", bool, repo_url is not None),
            force_sync=get("force_sync", bool, False),
            preserve_files=tuple(preserve),
            restart_backoff=self.override(
                get("restart_backoff", float, None, minimum=1), settings.restart_backoff
            ),
            max_restart_delay=self.override(
                get("max_restart_delay", float, None), settings.max_restart_delay
            ),
            restart_window=self.override(
                get("restart_window", float, None), settings.restart_window
            ),
            failed_cooldown=self.override(
                get("failed_cooldown", float, None), settings.failed_cooldown
            ),
            heartbeat_timeout=get("heartbeat_timeout", float, None),
            heartbeat_grace=get("heartbeat_grace", float, None),
            max_memory=self.parse_max_memory(raw.get("max_memory"), name),
            hooks=settings.hooks.merged(self.parse_hooks(get("hooks", dict, {}), name)),
            rollback_on_failure=get("rollback_on_failure", bool, False),
            rollback_window=self.override(
                get("rollback_window", float, None), settings.rollback_window
            ),
        )

    def parse_max_memory(self, value: object, bot: str) -> int | None:
        if value is None:
            return None
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.error(str(exc), bot=bot, key="max_memory") from None

    def value(
        self,
        raw: Mapping[str, Any],
        key: str,
        kind: type,
        default: Any,
        *,
        bot: str | None,
        minimum: float,
    ) -> Any:
        """Return ``raw[key]`` checked against *kind*, or *default* when absent or null."""
        value = raw.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error("missing required key", bot=bot, key=key)
            return default
        section_key = key if bot is not None else f"global_settings.{key}"
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is str:
            # YAML reads `script: 123` or `description: 1.0` as numbers; they are still text.
            ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
            value = str(value) if ok else value
        else:
            ok = isinstance(value, kind)
        if not ok:
            expected = {
                float: "a number",
                int: "an integer",
                str: "a string",
                bool: "true or false",
                list: "a list",
                dict: "a mapping",
            }[kind]
            raise self.error(
                f"must be {expected}, got {type(value).__name__} {value!r}",
                bot=bot,
                key=section_key,
            )
        if kind in (int, float) and value < minimum:
            raise self.error(f"must be at least {minimum:g}, got {value!r}", bot=bot, key=key)
        return float(value) if kind is float else value

    @staticmethod
    def override(value: Any, default: Any) -> Any:
        return default if value is None else value

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.path.parent / path
        return Path(os.path.normpath(path))

    def resolve_python(self, value: str) -> str:
        # A bare name ("python3.11") is looked up on PATH by the OS; a path is config-relative.
        if "/" not in value:
            return value
        return str(self.resolve(value))
