"""parse_command: the command language of the command file (SPEC 6.2)."""

from __future__ import annotations

import pytest

from trio_orchestrator.commands import (
    MAX_COMMAND_LENGTH,
    Action,
    BadCommand,
    Command,
    parse_command,
)
from trio_orchestrator.errors import EXIT_USAGE

BOT_ACTIONS = ["start", "stop", "restart", "pause", "resume", "update", "status"]


@pytest.mark.parametrize("word", BOT_ACTIONS)
def test_every_bot_action(word):
    assert parse_command(f"{word} MyBot") == Command(Action(word), "MyBot")


@pytest.mark.parametrize("word", BOT_ACTIONS)
def test_bot_action_needs_a_name(word):
    with pytest.raises(BadCommand, match="needs a bot name"):
        parse_command(word)


@pytest.mark.parametrize("line", ["status_all", "status_all dummy", "status_all a b c", "list"])
def test_status_all_with_or_without_a_second_token(line):
    command = parse_command(line)
    assert command == Command(Action(line.split()[0]))
    assert command.name is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("  restart   Bot-1.x_2  \n", Command(Action.RESTART, "Bot-1.x_2")),
        ("\tstop\tBot\r\n", Command(Action.STOP, "Bot")),
        ("RESTART Bot", Command(Action.RESTART, "Bot")),
        ("Status_All", Command(Action.STATUS_ALL)),
    ],
)
def test_whitespace_and_case(line, expected):
    assert parse_command(line) == expected


@pytest.mark.parametrize("line", ["", "   ", "\n", " \t \r\n", "# comment", "   # stop Bot", "#"])
def test_blank_lines_and_comments(line):
    assert parse_command(line) is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate Bot", "unknown action 'frobnicate'"),
        ("start_all", "unknown action"),
        ("status a b", "takes one bot name"),
        ("history a b", "takes one bot name"),
        ("start" + " x" * (MAX_COMMAND_LENGTH // 2 + 1), "longer than"),
    ],
)
def test_bad_lines(line, message):
    with pytest.raises(BadCommand, match=message) as info:
        parse_command(line)
    assert info.value.exit_code == EXIT_USAGE


def test_unknown_bot_is_not_the_parsers_business():
    # Bot names are checked by the supervisor against the config.
    assert parse_command("stop NoSuchBot") == Command(Action.STOP, "NoSuchBot")


def test_command_str_round_trips():
    for line in ["restart Bot", "status_all"]:
        assert str(parse_command(line)) == line
        assert parse_command(str(parse_command(line))) == parse_command(line)


def test_needs_bot():
    assert {action for action in Action if not action.needs_bot} == {
        Action.STATUS_ALL,
        Action.LIST,
        Action.RELOAD,
        Action.METRICS,
    }


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ("stop a b", ("a", "b")),
        ("restart all", ("all",)),
        ("update A B C", ("A", "B", "C")),
        ("restart Bot # comment", ("Bot",)),
    ],
)
def test_actions_take_several_names_or_all(line, names):
    command = parse_command(line)
    assert command.names == names
    assert command.is_all == (names == ("all",))
    assert str(command) == line.partition(" #")[0]
