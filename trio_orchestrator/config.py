"""The configuration file, parsed once into frozen attrs classes.

Each class declares its keys once: default, converter and validator live on the attrs
field, and the parser walks ``attrs.fields()`` to read the YAML document, so the known
keys, the defaults and the checks cannot drift apart. Every error in the file is
reported at once. Relative paths resolve against the config file's directory (SPEC 2),
never the cwd.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml
from attrs import converters, validators

from trio_orchestrator.errors import ConfigError, ConfigErrors, UnknownBotError

__all__ = [
    "COLORS",
    "MIN_HEALTHY_UPTIME",
    "RESTART_POLICIES",
    "STOP_SIGNALS",
    "BotConfig",
    "Config",
    "GlobalSettings",
    "Hooks",
    "RestartPolicy",
    "dump_yaml",
    "load_config",
    "parse_size",
    "resolve_executable",
]


class RestartPolicy(enum.StrEnum):
    """What an exit the user did not ask for leads to (SPEC 4)."""

    ON_FAILURE = "on-failure"
    ALWAYS = "always"
    NEVER = "never"


COLORS = ("red", "green", "yellow", "blue", "magenta", "cyan", "white")
RESTART_POLICIES = tuple(RestartPolicy)
# Signals a bot may choose to be stopped with; SIGKILL follows after stop_timeout anyway.
STOP_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
BOT_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# A run shorter than this is not "healthy" whatever the user asks: a bot that crashes
# within a second must never reset its consecutive-restart count.
MIN_HEALTHY_UPTIME = 1.0

# Field metadata: a nested mapping parsed as a section of its own (e.g. hooks), and a
# per-bot field whose default is the global setting of the same name.
_SECTION = "trio_orch.section"
_INHERITED = "trio_orch.inherited"
_INVALID = object()
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)", re.IGNORECASE)
_LISTEN_RE = re.compile(r"(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})")


# Converters: they accept what YAML produces and what they return themselves (attrs runs
# them again on attrs.evolve), and raise TypeError/ValueError with the user's wording.


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"must be a number, got {_describe(value)}")
    return float(value)


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be an integer, got {_describe(value)}")
    return value


def _text(value: object) -> str:
    # YAML reads `script: 123` or `description: 1.0` as numbers; they are still text.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"must be a string, got {_describe(value)}")
    return str(value)


def _word(value: object) -> str:
    text = _text(value)
    if not text:
        raise ValueError("must not be empty")
    return text


def _lower(value: object) -> str:
    return _text(value).lower()


def _text_or_none(value: object) -> str | None:
    return _text(value) or None


def _path(value: object) -> Path:
    return value if isinstance(value, Path) else Path(_word(value)).expanduser()


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"must be a list, got {_describe(value)}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise TypeError(f"entries must be strings, got {item!r}")
    return tuple(str(item) for item in value)


def _file_names(value: object) -> tuple[str, ...]:
    names = _strings(value)
    if "" in names:
        raise ValueError("entries must be non-empty strings, got ''")
    return names


def _argv(value: object) -> tuple[str, ...]:
    """A command: an argv list, or one string split like a shell would (no expansion)."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split {value!r}: {exc}") from None
    elif not isinstance(value, list | tuple):
        raise TypeError(f"must be a list or a string, got {_describe(value)}")
    argv = _strings(value)
    if not argv or not argv[0]:
        raise ValueError("must name a program")
    return argv


def _env(value: object) -> tuple[tuple[str, str], ...]:
    """``NAME: value`` pairs; numbers and booleans become their text."""
    if isinstance(value, tuple):  # already converted
        value = dict(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"must be a mapping, got {_describe(value)}")
    for name, text in value.items():
        if not isinstance(name, str) or not isinstance(text, str | int | float | bool):
            raise TypeError(f"entries must be NAME: value strings, got {name!r}: {text!r}")
    return tuple((name, str(text)) for name, text in value.items())


def _stop_signal(value: object) -> object:
    """``TERM``, ``SIGTERM`` or ``term`` -> ``signal.SIGTERM``.

    Anything else is left to the validators, whose message names the allowed signals.
    """
    if isinstance(value, str):
        name = value.strip().upper()
        by_name = {sig.name: sig for sig in STOP_SIGNALS}
        return by_name.get(name if name.startswith("SIG") else f"SIG{name}", value)
    return value


def _restart_policy(value: object) -> object:
    # Unknown values pass through to the in_ validator, whose message lists the policies.
    try:
        return RestartPolicy(value)
    except ValueError:
        return value


def parse_size(value: object) -> int:
    """Return the byte count that *value* means.

    ``10MB`` is 10 * 10**6; ``10MiB``, ``10Mi``, ``10M`` and ``10m`` are 10 * 2**20 (a bare
    letter is binary, as systemd and docker read it); ``512k``, ``1.5GiB`` and ``4096``
    work too. Units are k, M, G and T in any case; an int is taken as bytes.

    Raises:
        TypeError: *value* is neither an int nor a string.
        ValueError: *value* is a string that is not a size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise TypeError(f"must be a size like 10MB, 10MiB or 512k, got {_describe(value)}")
    match = _SIZE_RE.fullmatch(value.strip())
    if match is None or (match[3] and not match[2]):
        raise ValueError(f"not a size: {value!r} (use e.g. 10MB, 10MiB, 512k or bytes)")
    number, unit, binary, decimal = match.groups()
    base = 1000 if decimal and not binary else 1024
    exponent = "kmgt".index(unit.lower()) + 1 if unit else 0
    return round(float(number) * base**exponent)


# Validators that attrs does not have.


def _listen_address(_instance: object, _attribute: object, value: str) -> None:
    """``host:port``: a host name, an IPv4 address or a bracketed IPv6 one; port 0-65535."""
    match = _LISTEN_RE.fullmatch(value)
    if match is None or int(match["port"]) > 65535:
        raise ValueError(f"must be host:port (e.g. 127.0.0.1:9464 or [::1]:9464), got {value!r}")
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            raise ValueError(f"not an IPv6 address in brackets: {value!r}") from None


def _optional_number(bound: Callable[[object, object, float], None]) -> Any:
    """A float field that is None by default: a feature that is off unless set."""
    return attrs.field(
        default=None,
        converter=converters.optional(_number),
        validator=validators.optional(bound),
    )


def _command_field() -> Any:
    return attrs.field(default=None, converter=converters.optional(_argv))


def _flag(default: bool) -> Any:
    # No to_bool converter: `autostart: "no"` is far more likely a mistake than a wish.
    return attrs.field(default=default, validator=validators.instance_of(bool))


@attrs.frozen(kw_only=True)
class Hooks:
    """Commands run on bot events (argv tuples, None for none); a bot's own hook wins."""

    on_exit: tuple[str, ...] | None = _command_field()
    on_restart: tuple[str, ...] | None = _command_field()
    on_failed: tuple[str, ...] | None = _command_field()
    on_update: tuple[str, ...] | None = _command_field()

    def merged(self, other: Hooks) -> Hooks:
        """These hooks, with each event that *other* sets replaced by *other*'s command."""
        ours = attrs.asdict(other, recurse=False, filter=lambda _field, value: value is not None)
        return attrs.evolve(self, **ours)


@attrs.frozen(kw_only=True)
class GlobalSettings:
    """``global_settings``: manager-wide values and the defaults of per-bot overrides."""

    log_directory: Path = attrs.field(default=Path("logs"), converter=_path)
    max_restart_attempts: int = attrs.field(
        default=3, converter=_integer, validator=validators.ge(0)
    )
    restart_delay: float = attrs.field(default=5.0, converter=_number, validator=validators.ge(0))
    stop_timeout: float = attrs.field(default=10.0, converter=_number, validator=validators.ge(0))
    command_poll_interval: float = attrs.field(
        default=2.0, converter=_number, validator=validators.ge(0.05)
    )
    healthy_uptime: float = attrs.field(
        default=5.0, converter=_number, validator=validators.ge(MIN_HEALTHY_UPTIME)
    )
    git_timeout: float = attrs.field(default=60.0, converter=_number, validator=validators.ge(1))
    stop_signal: signal.Signals = attrs.field(
        default=signal.SIGTERM,
        converter=_stop_signal,
        validator=[validators.instance_of(signal.Signals), validators.in_(STOP_SIGNALS)],
    )
    # 0 = never rotate.
    log_max_bytes: int = attrs.field(
        default=10 * 2**20, converter=parse_size, validator=validators.ge(0)
    )
    log_backups: int = attrs.field(default=5, converter=_integer, validator=validators.ge(0))
    # Each automatic restart waits restart_delay * restart_backoff**n, at most max_restart_delay.
    restart_backoff: float = attrs.field(default=1.0, converter=_number, validator=validators.ge(1))
    max_restart_delay: float = attrs.field(
        default=300.0, converter=_number, validator=validators.ge(0)
    )
    # None: count consecutive restarts (SPEC 4); seconds: count restarts within the window.
    restart_window: float | None = _optional_number(validators.gt(0))
    # None: a failed bot stays down; seconds: it is started again after the cooldown.
    failed_cooldown: float | None = _optional_number(validators.gt(0))
    hooks: Hooks = attrs.field(
        default=Hooks(), validator=validators.instance_of(Hooks), metadata={_SECTION: Hooks}
    )
    hook_timeout: float = attrs.field(default=30.0, converter=_number, validator=validators.gt(0))
    rollback_window: float = attrs.field(
        default=600.0, converter=_number, validator=validators.gt(0)
    )
    metrics_listen: str | None = attrs.field(
        default=None,
        converter=converters.optional(_text),
        validator=validators.optional(_listen_address),
    )
    web_token: str | None = attrs.field(default=None, converter=converters.optional(_word))


def _inherited(name: str) -> Any:
    """A per-bot override of a global setting: its default, converter and validator."""
    setting = attrs.fields_dict(GlobalSettings)[name]
    return attrs.field(
        default=setting.default,
        converter=setting.converter,
        validator=setting.validator,
        metadata={**setting.metadata, _INHERITED: True},
    )


@attrs.frozen(kw_only=True)
class BotConfig:
    """One bot, with the global defaults already applied to its overridable settings.

    Exactly one of ``script`` (run as ``[python, script, *args]``) and ``command`` (an
    argv run as written) is set.
    """

    name: str = attrs.field(
        validator=[validators.instance_of(str), validators.matches_re(BOT_NAME_RE)]
    )
    directory: Path = attrs.field(converter=_path)
    script: str | None = attrs.field(default=None, converter=converters.optional(_word))
    command: tuple[str, ...] | None = _command_field()
    args: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    python: str = attrs.field(default=sys.executable, converter=_word)
    env: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_env)
    env_file: Path | None = attrs.field(default=None, converter=converters.optional(_path))
    color: str = attrs.field(default="white", converter=_lower, validator=validators.in_(COLORS))
    description: str = attrs.field(default="", converter=_text)
    autostart: bool = _flag(True)
    restart: RestartPolicy = attrs.field(
        default=RestartPolicy.ON_FAILURE,
        converter=_restart_policy,
        validator=validators.in_(RESTART_POLICIES),
    )
    max_restart_attempts: int = _inherited("max_restart_attempts")
    restart_delay: float = _inherited("restart_delay")
    stop_timeout: float = _inherited("stop_timeout")
    healthy_uptime: float = _inherited("healthy_uptime")
    stop_signal: signal.Signals = _inherited("stop_signal")  # noqa: RUF009 (an attrs.field)
    log_max_bytes: int = _inherited("log_max_bytes")
    log_backups: int = _inherited("log_backups")
    restart_backoff: float = _inherited("restart_backoff")
    max_restart_delay: float = _inherited("max_restart_delay")
    restart_window: float | None = _inherited("restart_window")
    failed_cooldown: float | None = _inherited("failed_cooldown")
    hooks: Hooks = _inherited("hooks")  # noqa: RUF009 (an attrs.field)
    rollback_window: float = _inherited("rollback_window")
    heartbeat_timeout: float | None = _optional_number(validators.gt(0))
    # None: the same as heartbeat_timeout.
    heartbeat_grace: float | None = _optional_number(validators.ge(0))
    max_memory: int | None = attrs.field(
        default=None,
        converter=converters.optional(parse_size),
        validator=validators.optional(validators.gt(0)),
    )
    rollback_on_failure: bool = _flag(False)
    repo_url: str | None = attrs.field(default=None, converter=converters.optional(_text_or_none))
    auto_update: bool = attrs.field(validator=validators.instance_of(bool))
    force_sync: bool = _flag(False)
    preserve_files: tuple[str, ...] = attrs.field(default=(), converter=_file_names)

    @auto_update.default
    def _auto_update_when_repo_url(self) -> bool:
        return self.repo_url is not None

    def __attrs_post_init__(self) -> None:
        if self.script is None and self.command is None:
            raise ValueError("missing required key: give 'script' or 'command'")
        if self.script is not None and self.command is not None:
            raise ValueError("give 'script' or 'command', not both")

    @property
    def argv(self) -> list[str]:
        """What the runner executes: ``[python, script, *args]``, or the command as written.

        A command's first word may be relative; :func:`resolve_executable` finds it.
        """
        if self.command is not None:
            return list(self.command)
        return [self.python, self.script, *self.args]

    @property
    def is_python(self) -> bool:
        """True for a ``script`` bot, False for a ``command`` bot."""
        return self.script is not None

    @property
    def updates_enabled(self) -> bool:
        return self.repo_url is not None and self.auto_update

    def executable(self) -> str | None:
        """The absolute path of the program this bot would run now, or None if missing."""
        if self.command is not None:
            return resolve_executable(self.command[0], self.directory)
        # The interpreter is looked up on PATH by exec, like a shell does.
        return shutil.which(self.python)


def resolve_executable(word: str, directory: str | os.PathLike[str]) -> str | None:
    """Return the absolute path that running *word* in a bot's *directory* executes, or None.

    A word with a ``/`` is relative to *directory* (or absolute); a bare word is looked
    up first as a file in *directory*, then on ``PATH``. Only executable files count.
    """
    if "/" in word:
        found = shutil.which(os.path.join(directory, word))
    else:
        found = shutil.which(word, path=os.fspath(directory)) or shutil.which(word)
    return os.path.normpath(os.path.abspath(found)) if found else None


@attrs.frozen
class Config:
    """A whole configuration file: build it with :func:`load_config` or :meth:`from_mapping`.

    ``warnings`` are one line each, naming the file (and the bot), for the CLI to print.
    """

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
            raise UnknownBotError(name, known=self.bots) from None

    @classmethod
    def from_mapping(cls, data: object, path: Path) -> Config:
        """Build the config from a parsed YAML document; *path* anchors relative paths.

        Raises:
            ConfigError: the document is invalid (:class:`ConfigErrors` for several errors).
        """
        return _Parser(Path(path).absolute()).parse(data)


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML file at *path*.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or not a valid config;
            :class:`ConfigErrors`, a subclass, when it has several errors.
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


def dump_yaml(*documents: object) -> str:
    """*documents* as YAML text, ``---`` between them, keys in the order given.

    For ``trio-orch export``: this module stays the only importer of yaml. Strings that
    YAML would read as something else (``no``, ``"on"``, ``1.0``) are quoted.
    """
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump_all(
        documents,
        Dumper=dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=10_000,
    )


_COMPARISON_RE = re.compile(r"'\w+' must be (>=|>|<=|<) (.+): (.*)")
_COMPARISONS = {">=": "at least", ">": "greater than", "<=": "at most", "<": "less than"}
_KINDS: dict[type, str] = {
    bool: "true or false",
    signal.Signals: "one of " + ", ".join(sig.name.removeprefix("SIG") for sig in STOP_SIGNALS),
}


def _label(option: object) -> str:
    return option if isinstance(option, str) else getattr(option, "name", repr(option))


def _explain(exc: TypeError | ValueError) -> str:
    """One line for the user from a converter's or an attrs validator's exception."""
    match exc.args:
        case (_, attrs.Attribute(), type() as expected, value) if isinstance(exc, TypeError):
            return f"must be {_KINDS.get(expected, expected.__name__)}, got {_describe(value)}"
        case (_, attrs.Attribute(), options, value):  # in_
            names = ", ".join(map(_label, options))
            return f"unknown value {_label(value)!r} (use one of {names})"
        case (str() as text,) if match := _COMPARISON_RE.fullmatch(text):
            # attrs' ge/gt say "'key' must be >= 0: -1.0"; the line names the key already.
            operator, bound, value = match.groups()
            return f"must be {_COMPARISONS[operator]} {bound}, got {value}"
    return str(exc)


def _did_you_mean(word: object, known: Iterable[str]) -> str:
    import difflib  # only a misspelt key pays for it: `list` and the CLI start faster

    close = difflib.get_close_matches(str(word), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _resolve(base: Path, path: str | Path) -> Path:
    return Path(os.path.normpath(base / Path(path).expanduser()))


@attrs.define
class _Parser:
    """Walks the YAML document once, collecting every warning and every error."""

    path: Path
    warnings: list[str] = attrs.Factory(list)
    errors: list[ConfigError] = attrs.Factory(list)

    def error(self, message: str, bot: str | None = None, key: str | None = None) -> None:
        self.errors.append(ConfigError(self.path, message, bot=bot, key=key))

    def warn(self, message: str, bot: str | None = None, section: str = "") -> None:
        where = [
            str(self.path),
            *([f"bot {bot!r}"] if bot else []),
            *([section] if section else []),
        ]
        self.warnings.append(": ".join([*where, message]))

    def parse(self, data: object) -> Config:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                self.path, "top level must be a mapping of 'bots' and 'global_settings'"
            )
        known = ("bots", "global_settings")
        for key in data:
            if key not in known:
                self.warn(f"unknown top-level key {key!r} ignored{_did_you_mean(key, known)}")
        raw_settings = data.get("global_settings")
        values = self.section(
            GlobalSettings, {} if raw_settings is None else raw_settings, prefix="global_settings."
        )
        settings = GlobalSettings(**(values or {}))
        settings = attrs.evolve(
            settings, log_directory=_resolve(self.path.parent, settings.log_directory)
        )
        bots = self.parse_bots(data.get("bots"), settings)
        if self.errors:
            error = self.errors[0] if len(self.errors) == 1 else ConfigErrors(self.errors)
            error.warnings = tuple(self.warnings)
            raise error
        return Config(path=self.path, settings=settings, bots=bots, warnings=tuple(self.warnings))

    def parse_bots(self, raw: object, settings: GlobalSettings) -> dict[str, BotConfig]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.error("must be a mapping of bot names to settings", key="bots")
            return {}
        bots = {name: self.parse_bot(name, entry, settings) for name, entry in raw.items()}
        return {name: bot for name, bot in bots.items() if bot is not None}

    def parse_bot(self, name: object, raw: object, settings: GlobalSettings) -> BotConfig | None:
        """One bot, or None once its errors are recorded.

        The script/command check across keys runs once the bot's keys are valid each,
        so that one mistake is not reported twice.
        """
        if not isinstance(name, str) or not BOT_NAME_RE.fullmatch(name):
            message = f"bad bot name {name!r}: use only letters, digits, '_', '.' and '-'"
            self.error(message, bot=str(name))
            return None
        raw = {} if raw is None else raw
        errors_before = len(self.errors)
        values = self.section(BotConfig, raw, bot=name)
        if values is None or len(self.errors) > errors_before:
            return None
        inherited = {
            field.name: getattr(settings, field.name)
            for field in attrs.fields(BotConfig)
            if field.metadata.get(_INHERITED)
        }
        values = {**inherited, **values, "name": name}
        values["hooks"] = settings.hooks.merged(values["hooks"])
        try:
            bot = BotConfig(**self.resolve_paths(values))
        except ValueError as exc:
            self.error(str(exc), bot=name, key="command" if "command" in values else "script")
            return None
        self.warn_about_program(bot, raw)
        return bot

    def section(
        self, cls: type, raw: object, bot: str | None = None, prefix: str = ""
    ) -> dict[str, Any] | None:
        """The keys of *raw* that *cls* declares, each converted and validated by its field.

        Returns None, with the error recorded, when *raw* is not a mapping. Errors name
        the key as ``prefix + key``; a global key is ``global_settings.<key>``.
        """
        if not isinstance(raw, dict):
            self.error(f"must be a mapping, got {_describe(raw)}", bot, prefix.rstrip(".") or None)
            return None
        # A bot's name is its key in `bots`, not a setting.
        fields = {field.name: field for field in attrs.fields(cls) if field.name != "name"}
        for key in raw:
            if key not in fields:
                message = f"unknown key {key!r} ignored{_did_you_mean(key, fields)}"
                self.warn(message, bot, prefix.rstrip("."))
        values = {}
        for name, field in fields.items():
            if raw.get(name) is None:
                if field.default is attrs.NOTHING:
                    self.error("missing required key", bot, prefix + name)
            elif (value := self.value(field, raw[name], bot, prefix + name)) is not _INVALID:
                values[name] = value
        return values

    def value(self, field: attrs.Attribute, raw: object, bot: str | None, key: str) -> Any:
        """*raw* converted and validated by *field*, or ``_INVALID`` once the error is recorded."""
        nested = field.metadata.get(_SECTION)
        if nested is not None:
            values = self.section(nested, raw, bot, f"{key}.")
            return _INVALID if values is None else nested(**values)
        try:
            if field.converter is not None:
                raw = field.converter(raw)
            if field.validator is not None:
                field.validator(None, field, raw)
        except (TypeError, ValueError) as exc:
            self.error(_explain(exc), bot, key)
            return _INVALID
        return raw

    def resolve_paths(self, values: dict[str, Any]) -> dict[str, Any]:
        """Make the paths in a bot's *values* absolute.

        The config's directory anchors ``directory`` and a ``python`` path (SPEC 2); the
        bot's directory anchors ``env_file``, as it does a command's program.
        """
        values["directory"] = _resolve(self.path.parent, values["directory"])
        if "/" in values.get("python", ""):
            values["python"] = str(_resolve(self.path.parent, values["python"]))
        if values.get("env_file") is not None:
            values["env_file"] = _resolve(values["directory"], values["env_file"])
        return values

    def warn_about_program(self, bot: BotConfig, raw: Mapping[str, Any]) -> None:
        given = [key for key in ("python", "args") if raw.get(key) is not None]
        if bot.command is not None and given:
            keys = " and ".join(map(repr, given))
            self.warn(f"{keys} ignored: only 'script' bots use it", bot.name)
        elif "python" in given and shutil.which(bot.python) is None:
            problem = "is not an executable file" if "/" in bot.python else "not found on PATH"
            self.warn(f"python {bot.python!r} {problem}", bot.name)
