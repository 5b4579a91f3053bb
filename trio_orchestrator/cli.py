"""Command line: ``trio-orch [global options] COMMAND [NAME] [--json]``.

Exit codes (SPEC 6.1): 0 success, 1 the action failed, 2 unknown bot or bad usage
(an invalid config included), 3 no manager is running.

Commands that talk to a running manager import only the standard library and
:mod:`trio_orchestrator.client`; trio is imported by ``start_all`` alone, and YAML and
SQLite only by the commands that read the config or the db, so ``trio-orch restart X``
costs little more than Python's own start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from trio_orchestrator import __version__
from trio_orchestrator.errors import (
    EXIT_ACTION_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ActionFailed,
    ConfigError,
    ManagerNotRunning,
    OrchestratorError,
    UnknownBotError,
)
from trio_orchestrator.units import human_bytes, human_percent, signal_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio_orchestrator.config import BotConfig, Config
    from trio_orchestrator.export import Export
    from trio_orchestrator.views import Paths

__all__ = ["main", "main_exit"]

DEFAULT_CONFIG = Path("bot_config.yaml")
COLOR_MODES = ("auto", "always", "never")
SHELLS = ("bash", "zsh")

# The actions on bots (the manager carries them out): summary and details of their help.
ACTIONS = {
    "start": ("start bots", "A user start also resets the bot's restart count."),
    "stop": (
        "stop bots",
        "stop_signal (SIGTERM) to the process group, then SIGKILL after stop_timeout.",
    ),
    "restart": ("stop bots, then start them again", ""),
    "pause": ("pause bots", "SIGSTOP to the process group; `resume` continues it."),
    "resume": ("resume paused bots", "SIGCONT to the process group."),
    "update": ("git-update bots now", "Restarts a bot if its commit changed."),
}
QUERIES = ("status", "list", "status_all")
JSON_HELP = "print JSON instead of a table (default: table)"

EPILOG = """\
examples:
  trio-orch init                        write bot_config.yaml and an example bot here
  trio-orch check                       validate the config, start nothing
  trio-orch start_all                   run the manager in the foreground (Ctrl-C stops)
  trio-orch list                        from another shell: every bot, its state and pid
  trio-orch restart Example             restart one bot in the running manager
  trio-orch --config /srv/bots/bot_config.yaml status Example --json
  eval "$(trio-orch completion bash)"   tab completion in this shell

exit codes:
  0  success
  1  the action failed (e.g. stopping a bot that is not running, a second start_all
     on the same db, an unusable db, init refusing to overwrite)
  2  unknown bot, bad usage, or an invalid or missing config
  3  no manager is running (start, stop, restart, pause, resume, update)

Global options go before the command, command options after it. Run
`trio-orch COMMAND --help` for a command's own help.
"""

_FORMATTER = argparse.RawDescriptionHelpFormatter


def _add_name(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME", help="a bot name from the config")


def _add_names(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("names", nargs="+", metavar="NAME", help="bot names from the config, or all")


def _add_json(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", action="store_true", help=JSON_HELP)


def _add_count(sub: argparse.ArgumentParser, help_text: str) -> None:
    sub.add_argument("-n", "--lines", type=_count, default=20, metavar="N", help=help_text)


def _start_all_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--timestamps",
        action="store_true",
        help="prefix each console line with its time, as the log files do (default: off)",
    )


def _status_arguments(sub: argparse.ArgumentParser) -> None:
    _add_name(sub)
    _add_json(sub)


def _init_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "directory",
        metavar="DIR",
        type=Path,
        nargs="?",
        default=Path("."),
        help="where to write them (default: the current directory)",
    )


def _completion_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("shell", choices=SHELLS, help="the shell to complete for")


def _export_arguments(sub: argparse.ArgumentParser) -> None:
    """``export systemd|compose|kubernetes TARGET`` (issue 14)."""
    sub.add_argument("target", choices=("systemd", "compose", "kubernetes"), help="engine")
    sub.add_argument(
        "path", metavar="TARGET", type=Path, help="directory (systemd) or file to write"
    )
    sub.add_argument(
        "--self",
        dest="self_unit",
        action="store_true",
        help="systemd: one unit running trio-orch start_all instead (default: a unit per bot)",
    )
    sub.add_argument("--user", metavar="U", help="systemd: User= of the units (default: root)")
    sub.add_argument(
        "--image",
        metavar="IMG",
        help="compose/kubernetes: image of every bot, {name} = bot name in lower case "
        "(default: build one per Python bot from a generated Dockerfile)",
    )
    sub.add_argument(
        "--include-secrets",
        action="store_true",
        help="kubernetes: put the env_file values into the Secrets (default: keys only)",
    )
    sub.add_argument(
        "--force", action="store_true", help="overwrite existing files (default: refuse)"
    )


def _logs_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", nargs="?", metavar="NAME", help="a bot (default: the manager)")
    _add_count(sub, "lines to print (default: 20)")
    sub.add_argument("-f", "--follow", action="store_true", help="follow until Ctrl-C")


def _history_arguments(sub: argparse.ArgumentParser) -> None:
    _add_name(sub)
    _add_count(sub, "events (default: 20; 0: all)")
    _add_json(sub)


class _Command(NamedTuple):
    """A command: its help, its own arguments, and what its positional argument completes
    to in the shell ("bots", "shells", "directories" or None)."""

    summary: str
    details: str = ""
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    completes: str | None = None

    @property
    def description(self) -> str:
        """The summary as a sentence, then the details."""
        sentence = self.summary[0].upper() + self.summary[1:] + "."
        return f"{sentence}\n\n{self.details}" if self.details else sentence


def _action(summary: str, details: str, action: str) -> _Command:
    details = (f"{details}\n" if details else "") + (
        "Asks the running manager (exit 3 if none runs).\n\n"
        f"examples: trio-orch {action} Example\n"
        f"          trio-orch {action} A B\n          trio-orch {action} all"
    )
    return _Command(summary, details, _add_names, "bots")


_EVERY_BOT = _Command(
    "show every bot (from the db when no manager runs)",
    "Orphaned bots (still running after their manager was killed) are marked.",
    _add_json,
)

# Every command but the hidden _bots, in the order --help lists them.
COMMANDS: dict[str, _Command] = {
    "start_all": _Command(
        "run the manager in the foreground until SIGINT/SIGTERM",
        "Starts the bots that were running at the last shutdown, plus never-seen bots\n"
        "with `autostart: true`. Ctrl-C stops them all and exits 0.",
        _start_all_arguments,
    ),
    "check": _Command("validate the config and start nothing"),
    "reload": _Command(
        "re-read the config and apply only the difference",
        "Added bots start (if autostart), removed bots stop, bots whose settings changed\n"
        "restart, the others keep running untouched. An invalid config is rejected\n"
        "(exit 2) and the running one stays. SIGHUP to the manager does the same.",
    ),
    **{action: _action(*texts, action) for action, texts in ACTIONS.items()},
    "status": _Command(
        "show one bot (from the db when no manager runs)",
        "example: trio-orch status Example --json",
        _status_arguments,
        "bots",
    ),
    "list": _EVERY_BOT,
    "status_all": _EVERY_BOT,
    "metrics": _Command(
        "print the running manager's Prometheus metrics once",
        "The text exposition format, as GET /metrics serves it with metrics_listen.",
    ),
    "init": _Command(
        "write a commented bot_config.yaml and an example bot",
        "Writes DIR/bot_config.yaml and DIR/bots/example/main.py; refuses (exit 1) if\n"
        "either exists.\n\nexample: trio-orch init mybots && cd mybots && trio-orch start_all",
        _init_arguments,
        "directories",
    ),
    "completion": _Command(
        "print a shell completion script",
        'examples:\n  eval "$(trio-orch completion bash)"      # in ~/.bashrc\n'
        "  source <(trio-orch completion zsh)       # in ~/.zshrc",
        _completion_arguments,
        "shells",
    ),
    "export": _Command(
        "write the config as systemd units, a compose file or Kubernetes manifests",
        "systemd DIR: one trio-orch-<Bot>.service per bot and trio-orch.target;\n"
        "  with --self, DIR/trio-orch.service that runs `trio-orch start_all` at boot.\n"
        "compose FILE: one service per bot (and Dockerfile.<Bot> beside FILE per Python\n"
        "  bot unless --image). kubernetes FILE: a Deployment (and an env_file Secret)\n"
        "  per bot. What a target cannot express is printed as a warning (stderr).\n"
        "Refuses (exit 1) to overwrite files unless --force.\n\n"
        "examples: trio-orch export systemd units/ --user bots\n"
        "          trio-orch export compose compose.yaml\n"
        "          trio-orch export kubernetes k8s/bots.yaml --image ghcr.io/me/{name}:1.0",
        _export_arguments,
    ),
    "logs": _Command(
        "print the last lines of a bot's log, or the manager's (-f: follow)",
        "Reads the log files, with or without a running manager; follows across\n"
        "rotations until Ctrl-C.\n\nexamples: trio-orch logs Example -n 50\n"
        "          trio-orch logs -f",
        _logs_arguments,
        "bots",
    ),
    "history": _Command(
        "show a bot's recorded events, newest last",
        "Starts, exits with their reason, updates and reloads, from the manager or the db.\n\n"
        "example: trio-orch history Example -n 50 --json",
        _history_arguments,
        "bots",
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-orch",
        description="Supervise long-running Python bots: start, stop and restart them, keep\n"
        "them alive, and show what they do.",
        epilog=EPILOG,
        formatter_class=_FORMATTER,
    )
    _add_global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(
            name, help=command.summary, description=command.description, formatter_class=_FORMATTER
        )
        if command.arguments is not None:
            command.arguments(sub)
    commands.add_parser("_bots")  # hidden: the bot names, for the completion scripts
    return parser


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="PATH",
        help="configuration file (default: ./bot_config.yaml)",
    )
    parser.add_argument(
        "--commands",
        type=Path,
        metavar="PATH",
        help="command file polled by start_all (default: bot_commands.txt beside the config)",
    )
    parser.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="state database (default: bot_states.db beside the config)",
    )
    parser.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="control socket of the manager (default: .trio-orch.sock beside the db)",
    )
    parser.add_argument(
        "--color",
        choices=COLOR_MODES,
        default="auto",
        help="colour the [Name] prefixes: auto on a terminal unless NO_COLOR is set, "
        "always (even piped, even with NO_COLOR), never (default: auto)",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a whole number >= 0: {text!r}")
    return value


# ----- helpers -----


def _paths(args: argparse.Namespace) -> Paths:
    from trio_orchestrator.views import Paths

    return Paths.resolve(args.config, args.db, args.commands, args.socket)


def _socket_path(args: argparse.Namespace) -> Path:
    # Same rule as Paths.resolve, without importing attrs to get there.
    config = args.config.absolute()
    db = (args.db or config.parent / "bot_states.db").absolute()
    return (args.socket or db.parent / ".trio-orch.sock").absolute()


def _command_line(args: argparse.Namespace, command: str) -> str:
    """``trio-orch [the global path options given] COMMAND``, ready to paste."""
    import shlex

    words = ["trio-orch"]
    if args.config != DEFAULT_CONFIG:
        words += ["--config", str(args.config)]
    for option in ("db", "commands", "socket"):
        if getattr(args, option) is not None:
            words += [f"--{option}", str(getattr(args, option))]
    return shlex.join([*words, command])


def _load_config(args: argparse.Namespace, *, warn: bool = True) -> Config:
    from trio_orchestrator.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        if args.config.exists() or args.config.is_symlink():
            # Often the typo behind the error: `scirpt: main.py` leaves `script` missing.
            _warn(*exc.warnings)
            raise
        directory = args.config.parent
        init = "trio-orch init" + ("" if directory == Path() else f" {directory}")
        raise ConfigError(
            exc.path,
            f"file not found; name another file with --config PATH, or create a starter "
            f"config with `{init}`",
        ) from None
    if warn:
        _warn(*config.warnings)
    return config


def _warn(*warnings: str) -> None:
    for warning in warnings:
        print(f"trio-orch: warning: {warning}", file=sys.stderr)


def _ask_manager(args: argparse.Namespace, message: dict[str, Any]) -> dict[str, Any]:
    from trio_orchestrator.client import request, socket_address

    try:
        with socket_address(_socket_path(args)) as address:
            return request(address, message)
    except ManagerNotRunning as exc:
        raise ManagerNotRunning(exc.socket_path, _command_line(args, "start_all")) from None


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# ----- commands -----


def cmd_start_all(args: argparse.Namespace) -> int:
    from trio_orchestrator.supervisor import run_manager

    config = _load_config(args)
    return run_manager(config, _paths(args), args.color, args.timestamps)


def cmd_check(args: argparse.Namespace) -> int:
    config = _load_config(args)
    programs = [_program_line(bot) for bot in config.bots.values()]
    names = ", ".join(config.bots) or "(none)"
    print(f"{config.path}: OK, {_plural(len(config.bots), 'bot')}: {names}")
    for line in programs:
        print(line)
    return EXIT_OK


def _program_line(bot: BotConfig) -> str:
    """``  Name: /abs/program args`` for ``check``, with warnings about what is missing.

    Not errors: a directory, a script or a program may appear before start_all (a
    deploy, a mount, a virtualenv created in the bot's directory).
    """
    if not bot.directory.is_dir():
        _warn(f"bot {bot.name!r}: no directory {bot.directory}")
    elif bot.script is not None and not (bot.directory / bot.script).is_file():
        _warn(f"bot {bot.name!r}: no script {bot.directory / bot.script}")
    if bot.env_file is not None and not bot.env_file.is_file():
        _warn(f"bot {bot.name!r}: no env_file {bot.env_file}")
    word, *rest = bot.argv
    program = bot.executable()
    if program is None:
        note = " (not found)"
        if bot.command is not None:  # a missing `python` is a config warning already
            where = f"in {bot.directory}" if "/" in word else f"in {bot.directory} or on PATH"
            _warn(f"bot {bot.name!r}: executable {word!r} not found {where}")
    elif "/" not in word and program != os.path.join(bot.directory, word):
        note = " (found on PATH)"
    else:
        note = ""
    return f"  {bot.name}: {shlex.join([program or word, *rest])}{note}"


def cmd_action(args: argparse.Namespace) -> int:
    try:
        reply = _ask_manager(args, {"command": args.command, "names": args.names})
    except ManagerNotRunning:
        from trio_orchestrator.commands import ALL  # attrs: only on this path

        # Tell a typo from a stopped manager, reading the config only on this path.
        config = _load_config(args)
        for name in args.names:
            if name != ALL:
                config.bot(name)
        raise
    print(reply.get("message", ""), file=sys.stdout if reply.get("ok") else sys.stderr)
    return int(reply.get("code", 1))


def cmd_reload(args: argparse.Namespace) -> int:
    reply = _ask_manager(args, {"command": "reload"})
    print(reply.get("message", ""), file=sys.stdout if reply.get("ok") else sys.stderr)
    return int(reply.get("code", 1))


def _offline_bots(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every configured bot as the db last recorded it (the manager is not running).

    A bot whose recorded process still runs (same pid and start time) is ``orphaned``:
    its manager was killed and left it behind; the next ``start_all`` ends it.
    """
    from trio_orchestrator.state import BotRecord, StateStore, records_for
    from trio_orchestrator.views import bot_info, recorded_process_alive

    config = _load_config(args)
    db_path = _paths(args).db
    stored: dict[str, BotRecord] = {}
    if db_path.exists():
        store = StateStore(db_path, readonly=True)
        try:
            stored = store.load_all()
        finally:
            store.close()
    records = records_for(config.bots, stored)
    bots = []
    for name, bot in config.bots.items():
        record = records[name]
        info = bot_info(bot, record)
        info["orphaned"] = recorded_process_alive(record.pid, record.pid_start_ticks)
        bots.append(info)
    return bots


def cmd_query(args: argparse.Namespace) -> int:
    name = getattr(args, "name", None)
    try:
        message = {"command": args.command, "name": name} if name else {"command": "list"}
        reply = _ask_manager(args, message)
        manager = "running"
        if not reply.get("ok"):
            print(reply.get("message", ""), file=sys.stderr)
            return int(reply.get("code", 1))
        bots = [reply["bot"]] if name else reply["bots"]
    except ManagerNotRunning:
        manager = "not running"
        bots = _offline_bots(args)
        if name:
            known = [bot["name"] for bot in bots]
            bots = [bot for bot in bots if bot["name"] == name]
            if not bots:
                raise UnknownBotError(name, known=known) from None
    if args.json:
        document = {"manager": manager, **bots[0]} if name else {"manager": manager, "bots": bots}
        print(json.dumps(document, indent=2))
    elif name:
        print(f"manager: {manager}")
        print(_details(bots[0]))
    else:
        print(f"manager: {manager}")
        print(_table(bots))
        if not name:
            print(_summary(bots))
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """Write the packaged starter config and example bot into DIR, never overwriting."""
    from importlib.resources import files

    templates = files("trio_orchestrator") / "templates"
    directory: Path = args.directory
    targets = {
        directory / "bot_config.yaml": templates / "bot_config.yaml",
        directory / "bots" / "example" / "main.py": templates / "example_bot.py",
    }
    existing = [str(path) for path in targets if path.exists() or path.is_symlink()]
    if existing:
        one = len(existing) == 1
        raise ActionFailed(
            f"init: {' and '.join(existing)} already {'exists' if one else 'exist'}; nothing "
            f"written (move {'it' if one else 'them'} away, or run `trio-orch init DIR` "
            "with another directory)"
        )
    for target, template in targets.items():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "x", encoding="utf-8") as handle:  # "x": never overwrite
                handle.write(template.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ActionFailed(f"init: cannot write {target}: {exc.strerror or exc}") from None
    print(f"wrote {' and '.join(str(path) for path in targets)}")
    print("next:")
    if directory != Path():
        print(f"  cd {directory}")
    print("  trio-orch check       # validate the config")
    print("  trio-orch start_all   # run the example bot (Ctrl-C stops it)")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Write the export's files (never over existing ones without --force); warnings to
    stderr, one line each naming the bot and the key."""
    misplaced = _misplaced_export_options(args)
    if misplaced:
        print(f"trio-orch: export {args.target}: {', '.join(misplaced)} not for this target",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    result = _export(args, _load_config(args))
    _write_export_files(result.files, force=args.force)
    _warn(*(f"export {args.target}: {warning}" for warning in result.warnings))
    if result.notes:
        print("next:")
        for note in result.notes:
            print(f"  {note}")
    return EXIT_OK


def _misplaced_export_options(args: argparse.Namespace) -> list[str]:
    """The options given that the chosen target does not take."""
    return [
        option
        for option, given, target in (
            ("--self", args.self_unit, "systemd"),
            ("--user", args.user is not None, "systemd"),
            ("--image", args.image is not None, "compose or kubernetes"),
            ("--include-secrets", args.include_secrets, "kubernetes"),
        )
        if given and args.target not in target.split(" or ")
    ]


def _export(args: argparse.Namespace, config: Config) -> Export:
    from trio_orchestrator import export

    path = args.path.absolute()
    if args.target == "systemd" and args.self_unit:
        argv = _manager_argv(args, config)
        return export.export_systemd_self(config, path, user=args.user, command=argv)
    if args.target == "systemd":
        return export.export_systemd(config, path, user=args.user)
    if args.target == "compose":
        return export.export_compose(config, path, image=args.image)
    return export.export_kubernetes(
        config, path, image=args.image, include_secrets=args.include_secrets
    )


def _manager_argv(args: argparse.Namespace, config: Config) -> list[str]:
    """The argv a ``--self`` unit runs: this manager with the given config and paths."""
    # Absolute paths: the unit's working directory is not this shell's.
    argv = [sys.executable, "-m", "trio_orchestrator", "--config", str(config.path)]
    for option in ("db", "commands", "socket"):
        if getattr(args, option) is not None:
            argv += [f"--{option}", str(getattr(args, option).absolute())]
    argv.append("start_all")
    return argv


def _write_export_files(files: dict[Path, str], *, force: bool) -> None:
    # A file that already holds this text is left alone: the compose and Kubernetes
    # exports share the Dockerfiles when written to one directory.
    files = {file: text for file, text in files.items() if not _holds(file, text)}
    existing = [str(file) for file in files if file.exists() or file.is_symlink()]
    if existing and not force:
        raise ActionFailed(
            f"export: {', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "nothing written (add --force to overwrite)"
        )
    for file, text in files.items():
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ActionFailed(f"export: cannot write {file}: {exc.strerror or exc}") from None
        print(f"wrote {file}")


def _holds(file: Path, text: str) -> bool:
    try:
        return file.is_file() and file.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def cmd_completion(args: argparse.Namespace) -> int:
    from trio_orchestrator.completion import script

    print(script(args.shell, _completion_spec()), end="")
    return EXIT_OK


def cmd_bots(args: argparse.Namespace) -> int:
    """The configured bot names, one a line; silent on errors (it runs inside completion)."""
    try:
        config = _load_config(args, warn=False)
    except OrchestratorError as exc:
        return exc.exit_code
    for name in config.bots:
        print(name)
    return EXIT_OK


def _completion_spec() -> dict[str, Any]:
    """What the completion scripts complete, taken from the parser itself."""
    parser = _parser()
    subparsers = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    return {
        "global_options": _options(parser),
        "commands": [
            (name, command.summary, command.completes, _options(subparsers.choices[name], True))
            for name, command in COMMANDS.items()
        ],
        "shells": SHELLS,
    }


def _options(
    parser: argparse.ArgumentParser, skip_help: bool = False
) -> list[tuple[str, str, Any, bool, bool]]:
    """``(option, help, choices, takes a value, the value is a path)`` of each option, but
    -h/--help with *skip_help* (the scripts add a command's themselves)."""
    return [
        (option, action.help or "", action.choices, action.nargs != 0, action.type is Path)
        for action in parser._actions
        if not (skip_help and isinstance(action, argparse._HelpAction))
        for option in action.option_strings
    ]


# ----- the table -----

ORPHANED = "running (orphaned: manager not running)"
_SUMMARY_ORDER = (
    "running",
    "orphaned",
    "starting",
    "paused",
    "stopping",
    "backoff",
    "exited",
    "failed",
    "stopped",
)


def _update_text(bot: dict[str, Any]) -> str | None:
    if not bot.get("last_update"):
        return None
    commit = f" (commit {bot['commit'][:12]})" if bot.get("commit") else ""
    return f"{bot['last_update']}{commit}"


def _details(bot: dict[str, Any]) -> str:
    """``status NAME``: one ``key: value`` line per field, the why-and-when ones included."""
    fields = [
        ("name", bot["name"]),
        ("state", bot["state"]),
        ("pid", bot["pid"]),
        ("uptime", _duration(bot.get("uptime")) if bot.get("uptime") is not None else None),
        (
            "cpu",
            human_percent(bot.get("cpu_percent")) if bot.get("cpu_percent") is not None else None,
        ),
        (
            "memory",
            human_bytes(bot.get("memory_bytes")) if bot.get("memory_bytes") is not None else None,
        ),
        ("processes", bot.get("processes")),
        ("last start", bot.get("last_start_time")),
        ("starts", bot["start_count"]),
        ("restarts", bot["restarts"]),
        ("last exit", bot.get("last_exit_reason")),
        ("last exit time", bot.get("last_exit_time")),
        ("next restart", bot.get("next_restart")),
        ("restart policy", bot.get("restart")),
        ("last update", _update_text(bot)),
        ("description", bot.get("description")),
    ]
    if bot.get("last_exit_reason") is None and bot.get("last_exit_code") is not None:
        fields[10] = ("last exit", f"code {bot['last_exit_code']}")
    width = max(len(key) for key, _ in fields) + 1
    return "\n".join(
        f"{key + ':':<{width}} {'-' if value in (None, '') else value}" for key, value in fields
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _exit_text(code: int | None) -> str:
    """An exit code as people read it: ``1``, or ``SIGTERM`` for a death by signal 15."""
    if code is None:
        return "-"
    return str(code) if code >= 0 else signal_name(-code)


def _table(bots: list[dict[str, Any]]) -> str:
    header = (
        *("NAME", "STATE", "PID", "UPTIME", "CPU", "MEM"),
        *("STARTS", "RESTARTS", "LAST EXIT", "DESCRIPTION"),
    )
    rows = [header]
    for bot in bots:
        rows.append(
            (
                bot["name"],
                ORPHANED if bot.get("orphaned") else bot["state"],
                "-" if bot["pid"] is None else str(bot["pid"]),
                _duration(bot.get("uptime")),
                human_percent(bot.get("cpu_percent")),
                human_bytes(bot.get("memory_bytes")),
                str(bot["start_count"]),
                str(bot["restarts"]),
                _exit_text(bot["last_exit_code"]),
                bot.get("description") or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    extra = [
        f"{bot['name']}: last update {bot['last_update']}"
        + (f" (commit {bot['commit'][:12]})" if bot.get("commit") else "")
        for bot in bots
        if bot.get("last_update")
    ]
    return "\n".join(lines + extra)


def cmd_metrics(args: argparse.Namespace) -> int:
    """Print the running manager's metrics (Prometheus text format) once."""
    reply = _ask_manager(args, {"command": "metrics"})
    print(reply.get("message", ""), end="", file=sys.stdout if reply.get("ok") else sys.stderr)
    return int(reply.get("code", 1))


def _summary(bots: list[dict[str, Any]]) -> str:
    """``3 bots: 2 running, 1 stopped``."""
    counts: dict[str, int] = {}
    for bot in bots:
        state = "orphaned" if bot.get("orphaned") else bot["state"]
        counts[state] = counts.get(state, 0) + 1
    order = {state: index for index, state in enumerate(_SUMMARY_ORDER)}
    states = sorted(counts, key=lambda state: order.get(state, len(order)))
    parts = ", ".join(f"{counts[state]} {state}" for state in states)
    return _plural(len(bots), "bot") + (f": {parts}" if parts else "")


def cmd_logs(args: argparse.Namespace) -> int:
    """Print the last lines of a log and, with ``-f``, follow it until Ctrl-C (exit 0).
    Reads the files only: it works with or without a running manager."""
    from trio_orchestrator import logtail

    config = _load_config(args)
    name = None if args.name is None else config.bot(args.name).name
    path = logtail.log_path(config.settings.log_directory, name)
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    if not args.follow:
        lines = logtail.tail(path, args.lines)
        if not lines and not path.exists():
            print(f"trio-orch: no log yet at {path}", file=sys.stderr)
            return EXIT_ACTION_FAILED
        write(b"".join(lines))
        return EXIT_OK
    try:
        logtail.follow(path, write, args.lines)
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is how following ends
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    """A bot's recorded events, newest last: from the manager, or the db when none runs."""
    try:
        message = {"command": "history", "names": [args.name], "lines": args.lines}
        reply = _ask_manager(args, message)
        if not reply.get("ok"):
            print(reply.get("message", ""), file=sys.stderr)
            return int(reply.get("code", 1))
        manager, name, events = "running", reply["name"], reply["events"]
    except ManagerNotRunning:
        from trio_orchestrator.state import StateStore

        manager = "not running"
        name = _load_config(args).bot(args.name).name
        events = []
        db_path = _paths(args).db
        if db_path.exists():
            store = StateStore(db_path, readonly=True)
            try:
                events = store.history(name, args.lines)
            finally:
                store.close()
    if args.json:
        print(json.dumps({"manager": manager, "name": name, "events": events}, indent=2))
        return EXIT_OK
    print(f"manager: {manager}")
    for event in events:
        print(f"{event['time']}  {event['event']:<8}  {event['detail'] or ''}".rstrip())
    if not events:
        print(f"no recorded events for {name}")
    return EXIT_OK


HANDLERS = {
    "start_all": cmd_start_all,
    "check": cmd_check,
    "reload": cmd_reload,
    "init": cmd_init,
    "completion": cmd_completion,
    "_bots": cmd_bots,
    **dict.fromkeys(ACTIONS, cmd_action),
    **dict.fromkeys(QUERIES, cmd_query),
    "logs": cmd_logs,
    "history": cmd_history,
    "export": cmd_export,
    "metrics": cmd_metrics,
}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (never raises for user errors)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or bad usage (2)
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        return HANDLERS[args.command](args)
    except OrchestratorError as exc:
        print(f"trio-orch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK  # `trio-orch list | head`


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
