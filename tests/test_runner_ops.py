"""BotRunner and issue 11: the env file read at each start, and the next restart time."""

from __future__ import annotations

import json
import time

import attrs
import pytest
import trio
from fakes import FakeBot, channel_output
from helpers import make_config, write_bot
from test_runner import make_runner

from trio_orchestrator.runner import BotRunner, BotState
from trio_orchestrator.state import BotRecord
from trio_orchestrator.views import bot_info


def with_env_file(bot, path):
    # As config.py resolves it: relative to the bot's directory.
    return attrs.evolve(bot, env_file=bot.directory / path)


SHOW_ENV = """
import json, os
names = ["FROM_OS", "OVERRIDDEN", "FILE_ONLY", "BOTH", "TRIO_ORCH_BOT", "PYTHONUNBUFFERED"]
print(json.dumps({name: os.environ.get(name) for name in names}), flush=True)
"""


def env_runner(tmp_path, env_file, env=None):
    directory = write_bot(tmp_path / "bot", SHOW_ENV)
    bots = {"Bot": {"script": "main.py", "directory": str(directory), "restart": "never"}}
    if env:
        bots["Bot"]["env"] = env
    config = make_config(tmp_path, bots)
    send, receive = trio.open_memory_channel(1000)
    transitions = []

    async def on_transition(runner, transition):
        transitions.append(transition)

    runner = BotRunner(
        bot=with_env_file(config.bots["Bot"], env_file),
        on_transition=on_transition,
        output=channel_output(send),
        extra_env=(("TRIO_ORCH_BOT", "Bot"),),
    )
    return runner, receive, transitions


async def run_to_end(runner):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(runner.run)
            await run.wait()
    return run


async def printed_env(receive) -> dict:
    _stream, block = await receive.receive()
    return json.loads(block.decode().splitlines()[0])


async def test_env_file_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_OS", "os")
    monkeypatch.setenv("OVERRIDDEN", "os")
    (tmp_path / "bot").mkdir()
    (tmp_path / "bot" / ".env").write_text(
        "# secrets\nexport OVERRIDDEN=file\nFILE_ONLY='from file'\nBOTH=file\n"
        "TRIO_ORCH_BOT=file\nPYTHONUNBUFFERED=0\n"
    )
    runner, receive, _ = env_runner(tmp_path, ".env", env={"BOTH": "env"})
    await run_to_end(runner)
    assert await printed_env(receive) == {
        "FROM_OS": "os",  # os.environ < env_file
        "OVERRIDDEN": "file",
        "FILE_ONLY": "from file",
        "BOTH": "env",  # env_file < env
        "TRIO_ORCH_BOT": "Bot",  # env < the manager's tags
        "PYTHONUNBUFFERED": "1",
    }


async def test_env_file_is_read_again_at_each_start(tmp_path):
    env_file = tmp_path / "bot" / "bot.env"
    env_file.parent.mkdir()
    env_file.write_text("FILE_ONLY=one\n")
    runner, receive, _ = env_runner(tmp_path, env_file)  # an absolute path works too
    await run_to_end(runner)
    assert (await printed_env(receive))["FILE_ONLY"] == "one"
    env_file.write_text("FILE_ONLY=two\n")
    await run_to_end(runner)
    assert (await printed_env(receive))["FILE_ONLY"] == "two"


@pytest.mark.parametrize(
    ("content", "why"),
    [(None, "no such file or directory"), ("A=1\nSECRET='hunter2\n", "line 2: expected")],
)
async def test_bad_env_file_fails_the_start_with_a_clear_reason(tmp_path, content, why):
    path = tmp_path / "bot" / ".env"
    path.parent.mkdir()
    if content is not None:
        path.write_text(content)
    runner, _, transitions = env_runner(tmp_path, ".env")
    run = await run_to_end(runner)
    assert run.pid is None
    assert runner.state is BotState.FAILED
    reason = transitions[-1].reason
    assert reason.startswith(f"env file {path}: {why}")
    assert "hunter2" not in reason
    assert [t.state for t in transitions] == [BotState.STARTING, BotState.FAILED]


async def test_next_restart_is_known_in_backoff_only(tmp_path, autojump_clock):
    fake = FakeBot([(1, 1), (1, 1)])
    runner, _ = make_runner(tmp_path, fake, restart_delay=30, max_restart_attempts=1)
    seen = []
    original = runner.on_transition

    async def on_transition(runner_, transition):
        seen.append((transition.state, runner_.next_restart, time.time()))
        await original(runner_, transition)

    runner.on_transition = on_transition
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
    backoff = [(when, now) for state, when, now in seen if state is BotState.BACKOFF]
    assert len(backoff) == 1
    when, now = backoff[0]
    assert when == pytest.approx(now + 30, abs=1)
    others = [when for state, when, _ in seen if state is not BotState.BACKOFF]
    assert others and all(when is None for when in others)
    assert runner.next_restart is None


def test_bot_info_shows_next_restart_in_backoff_only(tmp_path):
    config = make_config(tmp_path, {"Bot": {"script": "main.py", "directory": "."}})
    bot = config.bots["Bot"]
    soon = time.time() + 5
    info = bot_info(bot, BotRecord(name="Bot", state="backoff"), None, soon)
    assert info["next_restart"].startswith(time.strftime("%Y-%m-%dT"))
    assert info["next_restart"][-6] in "+-"  # with its UTC offset, like now_iso()
    assert bot_info(bot, BotRecord(name="Bot", state="running"), None, soon)["next_restart"] is None
