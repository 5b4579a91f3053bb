"""Command line: ``trio-orch [global options] COMMAND [NAME] [--json]``.

Exit codes (SPEC 6.1): 0 success, 1 the action failed, 2 unknown bot or bad usage
(an invalid config included), 3 no manager is running.

Commands that talk to a running manager import only the standard library and
:mod:`trio_orchestrator.client`; trio, YAML and SQLite are imported only by the commands
that need them, so ``trio-orch restart X`` costs little more than Python's own start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trio_orchestrator.commands import ALL
from trio_orchestrator.errors import (
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    ManagerNotRunning,
    OrchestratorError,
    UnknownBotError,
)
from trio_orchestrator.units import human_bytes, human_percent

if TYPE_CHECKING:
    from trio_orchestrator.config import BotConfig

__all__ = ["main", "main_exit"]

ACTIONS = ("start", "stop", "restart", "pause", "resume", "update")
QUERIES = ("status", "list", "status_all")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-orch",
        description="Supervise long-running Python bots (see README.md).",
    )
    parser.add_argument("--config", type=Path, default=Path("bot_config.yaml"))
    parser.add_argument("--commands", type=Path, help="command file (bot_commands.txt)")
    parser.add_argument("--db", type=Path, help="state database (bot_states.db)")
    parser.add_argument("--socket", type=Path, help="control socket (.trio-orch.sock)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("start_all", help="run the manager in the foreground")
    commands.add_parser("check", help="validate the config")
    commands.add_parser(
        "reload", help="re-read the config; restart only the bots whose settings changed"
    )
    for action in ACTIONS:
        sub = commands.add_parser(action, help=f"{action} bots in the running manager")
        sub.add_argument("names", nargs="+", metavar="NAME", help="bot names, or all")
    status = commands.add_parser("status", help="show one bot")
    status.add_argument("name")
    status.add_argument("--json", action="store_true")
    for query in ("list", "status_all"):
        sub = commands.add_parser(query, help="show every bot")
        sub.add_argument("--json", action="store_true")
    commands.add_parser("metrics", help="print the running manager's Prometheus metrics")
    return parser


def _paths(args: argparse.Namespace):
    from trio_orchestrator.views import Paths

    return Paths.resolve(args.config, args.db, args.commands, args.socket)


def _socket_path(args: argparse.Namespace) -> Path:
    # Same rule as Paths.resolve, without importing trio to get there.
    config = args.config.absolute()
    db = (args.db or config.parent / "bot_states.db").absolute()
    return (args.socket or db.parent / ".trio-orch.sock").absolute()


def _load_config(args: argparse.Namespace):
    from trio_orchestrator.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        # Often the typo behind the error: `scirpt: main.py` leaves `script` missing.
        _warn(*exc.warnings)
        raise
    _warn(*config.warnings)
    return config


def _warn(*warnings: str) -> None:
    for warning in warnings:
        print(f"trio-orch: warning: {warning}", file=sys.stderr)


def _ask_manager(args: argparse.Namespace, message: dict[str, Any]) -> dict[str, Any]:
    from trio_orchestrator.client import request, socket_address

    with socket_address(_socket_path(args)) as address:
        return request(address, message)


def cmd_start_all(args: argparse.Namespace) -> int:
    from trio_orchestrator.supervisor import run_manager

    config = _load_config(args)
    return run_manager(config, _paths(args), args.color)


def cmd_check(args: argparse.Namespace) -> int:
    config = _load_config(args)
    programs = [_program_line(bot) for bot in config.bots.values()]
    print(f"{config.path}: OK, {len(config.bots)} bots: {', '.join(config.bots) or '(none)'}")
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
    """Every configured bot as the db last recorded it (the manager is not running)."""
    from trio_orchestrator.state import BotRecord, StateStore, records_for
    from trio_orchestrator.views import bot_info

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
    return [bot_info(bot, records[name]) for name, bot in config.bots.items()]


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
            bots = [bot for bot in bots if bot["name"] == name]
            if not bots:
                raise UnknownBotError(name) from None
    if args.json:
        document = {"manager": manager, **bots[0]} if name else {"manager": manager, "bots": bots}
        print(json.dumps(document, indent=2))
    else:
        print(f"manager: {manager}")
        print(_table(bots))
    return EXIT_OK


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
                bot["state"],
                "-" if bot["pid"] is None else str(bot["pid"]),
                _duration(bot.get("uptime")),
                human_percent(bot.get("cpu_percent")),
                human_bytes(bot.get("memory_bytes")),
                str(bot["start_count"]),
                str(bot["restarts"]),
                "-" if bot["last_exit_code"] is None else str(bot["last_exit_code"]),
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


HANDLERS = {
    "start_all": cmd_start_all,
    "check": cmd_check,
    "reload": cmd_reload,
    **dict.fromkeys(ACTIONS, cmd_action),
    **dict.fromkeys(QUERIES, cmd_query),
    "metrics": cmd_metrics,
}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (never raises for user errors)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad usage (2)
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
