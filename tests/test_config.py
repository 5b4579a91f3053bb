from __future__ import annotations

import re
import shutil
import signal
import sys
from pathlib import Path

import attrs
import pytest
import yaml
from helpers import cli, make_config, write_config

from trio_orchestrator.config import (
    BotConfig,
    Config,
    GlobalSettings,
    Hooks,
    RestartPolicy,
    load_config,
    parse_size,
    resolve_executable,
)
from trio_orchestrator.errors import ConfigError, ConfigErrors


def test_valid_config_with_defaults_and_overrides(tmp_path):
    path = write_config(
        tmp_path / "bot_config.yaml",
        {
            "A": {"script": "main.py", "directory": "bots/a", "args": ["--x", 1]},
            "B": {
                "script": "run.py",
                "directory": "/opt/b",
                "restart_delay": 0.5,
                "max_restart_attempts": 7,
                "stop_timeout": 2,
                "color": "Red",
                "env": {"TOKEN": "abc", "N": 3},
                "repo_url": "https://example.invalid/b.git",
                "restart": "always",
            },
        },
        restart_delay=3,
        stop_timeout=4,
    )
    config = load_config(path)
    a, b = config.bots["A"], config.bots["B"]
    assert a.directory == tmp_path / "bots" / "a"  # relative to the config, not the cwd
    assert a.argv == [sys.executable, "main.py", "--x", "1"]
    assert (a.restart_delay, a.stop_timeout, a.max_restart_attempts) == (3.0, 4.0, 3)
    assert (a.restart, a.autostart, a.updates_enabled) == ("on-failure", True, False)
    assert (b.restart_delay, b.stop_timeout, b.max_restart_attempts) == (0.5, 2.0, 7)
    assert b.color == "red"
    assert dict(b.env) == {"TOKEN": "abc", "N": "3"}
    assert b.updates_enabled and b.restart == "always"
    assert config.settings.log_directory == tmp_path / "logs"
    assert config.warnings == ()


def test_unknown_keys_are_warnings_naming_the_key(tmp_path):
    path = write_config(
        tmp_path / "c.yaml", {"A": {"script": "m.py", "directory": ".", "colour": "red"}}
    )
    config = load_config(path)
    assert len(config.warnings) == 1
    assert "'colour'" in config.warnings[0] and "'A'" in config.warnings[0]


@pytest.mark.parametrize(
    ("text", "bot", "key", "fragment"),
    [
        ("bots:\n  A: {script: m.py\n", None, None, "YAML syntax error at line"),
        ("bots:\n  A: {directory: .}\n", "A", "script", "missing required key"),
        ("bots:\n  A: {script: m.py}\n", "A", "directory", "missing required key"),
        ("bots:\n  'bad name': {script: m.py, directory: .}\n", "bad name", None, "bad bot name"),
        ("bots:\n  A: {script: m.py, directory: ., color: pink}\n", "A", "color", "pink"),
        ("bots:\n  A: {script: m.py, directory: ., restart_delay: soon}\n", "A", None, "number"),
        ("bots:\n  A: {script: m.py, directory: ., autostart: 'yes'}\n", "A", None, "true or"),
        ("bots:\n  A: {script: m.py, directory: ., restart: sometimes}\n", "A", "restart", ""),
        ("bots:\n  A: {script: m.py, directory: ., args: 3}\n", "A", "args", "a list"),
        ("bots: [1, 2]\n", None, "bots", "mapping"),
        ("global_settings: {restart_delay: -1}\nbots: {}\n", None, None, "at least 0"),
        ("global_settings: {healthy_uptime: 0.5}\nbots: {}\n", None, None, "at least 1"),
    ],
)
def test_each_error_names_file_bot_and_key(tmp_path, text, bot, key, fragment):
    path = tmp_path / "bot_config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert error.exit_code == 2
    assert str(path) in str(error)
    assert error.bot == bot
    if key is not None:
        assert error.key == key
    assert fragment in str(error)
    assert "\n" not in str(error)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_check_command_exit_codes_without_traceback(tmp_path):
    good = write_config(tmp_path / "good.yaml", {"A": {"script": "m.py", "directory": "."}})
    result = cli(good, "check")
    assert result.returncode == 0, result.stderr
    assert "1 bot: A" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("bots:\n  A: {script: m.py, directory: ., color: pink}\n")
    result = cli(bad, "check")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "bad.yaml" in lines[0] and "'A'" in lines[0] and "'color'" in lines[0]

    result = cli(tmp_path / "missing.yaml", "start_all")
    assert result.returncode == 2
    assert "file not found" in result.stderr and "Traceback" not in result.stderr


def test_check_warns_about_missing_directory_or_script(tmp_path):
    (tmp_path / "present").mkdir()
    config = write_config(
        tmp_path / "bot_config.yaml",
        {
            "NoDir": {"script": "m.py", "directory": "absent"},
            "NoScript": {"script": "m.py", "directory": "present"},
        },
    )
    result = cli(config, "check")
    assert result.returncode == 0
    assert "'NoDir': no directory" in result.stderr
    assert "'NoScript': no script" in result.stderr


# --- validation declared on the classes, every new key --------------------------------------


def bot_error(tmp_path, text: str) -> ConfigError:
    path = tmp_path / "bot_config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_every_new_key_globally_and_per_bot(tmp_path):
    (tmp_path / "web").mkdir()
    config = make_config(
        tmp_path,
        {
            "Web": {
                "command": ["gunicorn", "app:app"],
                "directory": "web",
                "stop_signal": "int",
                "env_file": ".env",
                "log_max_bytes": "1MiB",
                "log_backups": 2,
                "restart_backoff": 3,
                "max_restart_delay": 30,
                "restart_window": 120,
                "failed_cooldown": 900,
                "heartbeat_timeout": 20,
                "heartbeat_grace": 60,
                "max_memory": "300MB",
                "hooks": {"on_exit": "notify exit"},
                "rollback_on_failure": True,
                "rollback_window": 60,
                "healthy_uptime": 2,
            },
            "Plain": {"script": "main.py", "directory": "."},
        },
        stop_signal="SIGQUIT",
        log_max_bytes="512k",
        log_backups=7,
        restart_backoff=2,
        max_restart_delay=100,
        restart_window=600,
        failed_cooldown=60,
        hooks={"on_failed": ["page", "--urgent"], "on_exit": ["log-exit"]},
        hook_timeout=5,
        rollback_window=300,
        metrics_listen="127.0.0.1:9464",
        web_token="s3cret",
    )
    settings, web, plain = config.settings, config.bots["Web"], config.bots["Plain"]
    assert settings.stop_signal is signal.SIGQUIT
    assert (settings.log_max_bytes, settings.log_backups) == (512 * 1024, 7)
    assert (settings.hook_timeout, settings.rollback_window) == (5.0, 300.0)
    assert (settings.metrics_listen, settings.web_token) == ("127.0.0.1:9464", "s3cret")
    assert web.command == ("gunicorn", "app:app") and web.script is None and not web.is_python
    assert web.argv == ["gunicorn", "app:app"]
    assert web.stop_signal is signal.SIGINT
    assert web.env_file == tmp_path / "web" / ".env"  # relative to the bot's directory
    assert (web.log_max_bytes, web.log_backups) == (2**20, 2)
    assert (web.restart_backoff, web.max_restart_delay) == (3.0, 30.0)
    assert (web.restart_window, web.failed_cooldown) == (120.0, 900.0)
    assert (web.heartbeat_timeout, web.heartbeat_grace) == (20.0, 60.0)
    assert web.max_memory == 300_000_000
    assert (web.rollback_on_failure, web.rollback_window, web.healthy_uptime) == (True, 60.0, 2.0)
    assert web.hooks == Hooks(on_exit=("notify", "exit"), on_failed=("page", "--urgent"))
    # A bot that sets nothing carries the global values.
    assert plain.is_python and plain.stop_signal is signal.SIGQUIT
    assert (plain.log_max_bytes, plain.log_backups) == (512 * 1024, 7)
    assert (plain.restart_backoff, plain.max_restart_delay) == (2.0, 100.0)
    assert (plain.restart_window, plain.failed_cooldown, plain.rollback_window) == (
        600.0,
        60.0,
        300.0,
    )
    assert plain.hooks == settings.hooks
    assert (plain.heartbeat_timeout, plain.max_memory, plain.env_file) == (None, None, None)
    assert config.warnings == ()


def test_defaults_come_from_the_classes(tmp_path):
    config = make_config(tmp_path, {"A": {"script": "m.py", "directory": "."}})
    settings, bot = config.settings, config.bots["A"]
    assert settings == attrs.evolve(GlobalSettings(), log_directory=tmp_path / "logs")
    assert settings.stop_signal is signal.SIGTERM and settings.log_max_bytes == 10 * 2**20
    assert (settings.restart_window, settings.failed_cooldown, settings.metrics_listen) == (
        None,
        None,
        None,
    )
    assert bot.restart is RestartPolicy.ON_FAILURE and bot.restart == "on-failure"
    assert bot.hooks == Hooks() and not bot.rollback_on_failure


def test_bot_config_can_be_built_with_keywords(tmp_path):
    bot = BotConfig(name="A", script="main.py", directory=tmp_path)
    assert bot.argv == [sys.executable, "main.py"]
    assert (bot.restart_delay, bot.stop_timeout, bot.healthy_uptime) == (5.0, 10.0, 5.0)
    assert bot.stop_signal is signal.SIGTERM and bot.hooks == Hooks()
    assert not bot.auto_update
    assert BotConfig(name="B", script="m.py", directory=tmp_path, repo_url="u").auto_update
    assert BotConfig(name="C", command="run --fast", directory=tmp_path).argv == ["run", "--fast"]
    with pytest.raises(ValueError, match="give 'script' or 'command'"):
        BotConfig(name="D", directory=tmp_path)
    with pytest.raises(ValueError, match="not both"):
        BotConfig(name="E", script="m.py", command=["x"], directory=tmp_path)


BAD_VALUES = [
    ("command", "[]", "must name a program"),
    ("command", "'run \"unclosed'", "cannot split"),
    ("command", "3", "a list or a string"),
    ("stop_signal", "KILL", "one of TERM, INT, QUIT, HUP, USR1, USR2"),
    ("stop_signal", "15", "one of TERM"),
    ("env_file", "''", "must not be empty"),
    ("log_max_bytes", "10XB", "not a size"),
    ("log_max_bytes", "-1", "at least 0"),
    ("log_backups", "1.5", "an integer"),
    ("restart_backoff", "0.5", "at least 1"),
    ("max_restart_delay", "-1", "at least 0"),
    ("restart_window", "0", "greater than 0"),
    ("failed_cooldown", "soon", "a number"),
    ("heartbeat_timeout", "0", "greater than 0"),
    ("heartbeat_grace", "-1", "at least 0"),
    ("max_memory", "0", "greater than 0"),
    ("max_memory", "lots", "not a size"),
    ("hooks", "[a]", "a mapping"),
    ("hooks.on_exit", "{on_exit: {a: 1}}", "a list or a string"),
    ("rollback_on_failure", "'yes'", "true or false"),
    ("rollback_window", "0", "greater than 0"),
    ("healthy_uptime", "0.5", "at least 1"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD_VALUES)
def test_bad_bot_value_names_bot_and_key(tmp_path, key, value, fragment):
    line = f"{key}: {value}" if key != "hooks.on_exit" else f"hooks: {value}"
    error = bot_error(tmp_path, f"bots:\n  A: {{script: m.py, directory: ., {line}}}\n")
    assert (error.bot, error.key) == ("A", key)
    assert fragment in str(error) and "\n" not in str(error)


GLOBAL_KEYS = attrs.fields_dict(GlobalSettings)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        *[case for case in BAD_VALUES if case[0].split(".")[0] in GLOBAL_KEYS],
        ("hook_timeout", "0", "greater than 0"),
        ("metrics_listen", "9464", "host:port"),
        ("web_token", "''", "must not be empty"),
    ],
)
def test_bad_global_value_names_the_global_key(tmp_path, key, value, fragment):
    line = f"{key}: {value}" if key != "hooks.on_exit" else f"hooks: {value}"
    error = bot_error(tmp_path, f"global_settings: {{{line}}}\nbots: {{}}\n")
    assert (error.bot, error.key) == (None, f"global_settings.{key}")
    assert fragment in str(error)


# --- every error at once ---------------------------------------------------------------------


ALL_WRONG = """\
global_settings: {restart_delay: -1, stop_signal: KILL}
bots:
  A: {script: m.py, directory: ., restart: sometimes, color: pink}
  B: {directory: .}
  C: {script: m.py, command: run, directory: .}
  'bad name': {script: m.py, directory: .}
"""


def test_all_errors_are_reported_at_once(tmp_path):
    error = bot_error(tmp_path, ALL_WRONG)
    assert isinstance(error, ConfigErrors) and error.exit_code == 2
    found = [(each.bot, each.key) for each in error.errors]
    assert found == [
        (None, "global_settings.restart_delay"),
        (None, "global_settings.stop_signal"),
        ("A", "color"),
        ("A", "restart"),
        ("B", "script"),
        ("C", "command"),
        ("bad name", None),
    ]
    lines = str(error).splitlines()
    assert len(lines) == 7
    assert all(line.startswith(f"config error: {tmp_path / 'bot_config.yaml'}") for line in lines)
    assert "bot 'A', key 'restart': unknown value 'sometimes'" in lines[3]


def test_cli_prints_every_error_one_per_line(tmp_path):
    path = tmp_path / "bot_config.yaml"
    path.write_text(ALL_WRONG.replace("  A: {", "  A: {scirpt: x, "))
    result = cli(path, "check")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    # The warning that may explain an error comes first, then one line per error.
    assert lines[0].startswith("trio-orch: warning: ") and "did you mean 'script'" in lines[0]
    assert lines[1].startswith("trio-orch: config error: ")
    assert len(lines) == 8 and all(line.startswith("config error: ") for line in lines[2:])


# --- warnings --------------------------------------------------------------------------------


def test_unknown_keys_suggest_the_near_key(tmp_path):
    config = make_config(
        tmp_path,
        {"A": {"script": "m.py", "directory": ".", "restart_dealy": 1, "zzz": 1}},
        stop_timeuot=3,
        hooks={"on_exitt": "x"},
    )
    assert config.warnings == (
        f"{tmp_path / 'bot_config.yaml'}: global_settings: unknown key 'stop_timeuot' ignored"
        " (did you mean 'stop_timeout'?)",
        f"{tmp_path / 'bot_config.yaml'}: global_settings.hooks: unknown key 'on_exitt' ignored"
        " (did you mean 'on_exit'?)",
        f"{tmp_path / 'bot_config.yaml'}: bot 'A': unknown key 'restart_dealy' ignored"
        " (did you mean 'restart_delay'?)",
        f"{tmp_path / 'bot_config.yaml'}: bot 'A': unknown key 'zzz' ignored",
    )


def test_python_that_is_not_executable_is_a_warning(tmp_path):
    not_executable = tmp_path / "python-text"
    not_executable.write_text("")
    executable = tmp_path / "python-ok"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    config = make_config(
        tmp_path,
        {
            "Text": {"script": "m.py", "directory": ".", "python": "./python-text"},
            "Bare": {"script": "m.py", "directory": ".", "python": "no-such-python-3.99"},
            "Ok": {"script": "m.py", "directory": ".", "python": "python-ok/../python-ok"},
            "OnPath": {"script": "m.py", "directory": ".", "python": "sh"},
        },
    )
    assert config.bots["Text"].python == str(not_executable)  # relative to the config
    assert config.bots["Ok"].python == str(executable)
    assert len(config.warnings) == 2
    assert f"bot 'Text': python '{not_executable}' is not an executable file" in config.warnings[0]
    assert "bot 'Bare': python 'no-such-python-3.99' not found on PATH" in config.warnings[1]


def test_python_and_args_with_command_are_ignored_with_a_warning(tmp_path):
    config = make_config(
        tmp_path,
        {"A": {"command": "run", "directory": ".", "python": "python3", "args": ["-x"]}},
    )
    assert config.bots["A"].argv == ["run"]
    (warning,) = config.warnings
    assert "bot 'A': 'python' and 'args' ignored" in warning


# --- command, script, sizes, signals, hooks, metrics_listen ---------------------------------


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        (
            "gunicorn 'app:create()' --bind 0.0.0.0:8000",
            ["gunicorn", "app:create()", "--bind", "0.0.0.0:8000"],
        ),
        ('node "my server.js"', ["node", "my server.js"]),
        ("echo $HOME ~ *", ["echo", "$HOME", "~", "*"]),  # split, never expanded
        (["./run.sh", 3, "a b"], ["./run.sh", "3", "a b"]),
    ],
)
def test_command_string_is_split_like_a_shell(tmp_path, command, argv):
    config = make_config(tmp_path, {"A": {"command": command, "directory": "."}})
    assert config.bots["A"].argv == argv


@pytest.mark.parametrize(
    ("entry", "key", "fragment"),
    [
        ({"directory": "."}, "script", "missing required key: give 'script' or 'command'"),
        ({"directory": ".", "script": "m.py", "command": "x"}, "command", "not both"),
    ],
)
def test_exactly_one_of_script_and_command(tmp_path, entry, key, fragment):
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, {"A": entry})
    assert (info.value.bot, info.value.key) == ("A", key)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("512B", 512),
        ("512k", 512 * 1024),
        ("512K", 512 * 1024),
        ("10MB", 10 * 10**6),
        ("10mb", 10 * 10**6),
        ("10MiB", 10 * 2**20),
        ("10Mi", 10 * 2**20),
        ("10M", 10 * 2**20),
        ("1G", 2**30),
        ("1GiB", 2**30),
        ("1.5 GB", 1_500_000_000),
        ("2T", 2 * 2**40),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "10XB", "1iB", "-5MB", "10 M B", "ten"])
def test_parse_size_rejects_non_sizes(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("value", [True, 1.5, None, [1]])
def test_parse_size_rejects_other_types(value):
    with pytest.raises(TypeError, match="must be a size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TERM", signal.SIGTERM),
        ("SIGTERM", signal.SIGTERM),
        ("term", signal.SIGTERM),
        ("sigint", signal.SIGINT),
        ("QUIT", signal.SIGQUIT),
        ("HUP", signal.SIGHUP),
        ("usr1", signal.SIGUSR1),
        ("SIGUSR2", signal.SIGUSR2),
    ],
)
def test_stop_signal_forms(tmp_path, text, expected):
    config = make_config(tmp_path, {"A": {"script": "m.py", "directory": ".", "stop_signal": text}})
    assert config.bots["A"].stop_signal is expected


def test_hooks_merge_per_event_and_the_bot_wins(tmp_path):
    config = make_config(
        tmp_path,
        {
            "A": {"script": "m.py", "directory": ".", "hooks": {"on_exit": ["a-exit", "$BOT"]}},
            "B": {"script": "m.py", "directory": ".", "hooks": {"on_update": "b-update"}},
        },
        hooks={"on_exit": "global-exit", "on_restart": "global-restart"},
    )
    a, b = config.bots["A"].hooks, config.bots["B"].hooks
    assert a == Hooks(on_exit=("a-exit", "$BOT"), on_restart=("global-restart",))
    assert b == Hooks(
        on_exit=("global-exit",), on_restart=("global-restart",), on_update=("b-update",)
    )
    assert Hooks(on_failed=["x"]).merged(Hooks()) == Hooks(on_failed=("x",))


@pytest.mark.parametrize(
    "address", ["127.0.0.1:9464", "localhost:0", "[::1]:9464", "[fe80::1%eth0]:80", "0.0.0.0:65535"]
)
def test_metrics_listen_accepts_host_port(tmp_path, address):
    config = make_config(tmp_path, {}, metrics_listen=address)
    assert config.settings.metrics_listen == address


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        (":9464", "host:port"),
        ("9464", "host:port"),
        ("localhost", "host:port"),
        ("127.0.0.1:65536", "host:port"),
        ("::1:9464", "host:port"),
        ("[::1]", "host:port"),
        ("[not-ipv6]:80", "not an IPv6 address"),
        ("host:80 ", "host:port"),
    ],
)
def test_metrics_listen_rejects_other_forms(tmp_path, address, fragment):
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, {}, metrics_listen=address)
    assert info.value.key == "global_settings.metrics_listen"
    assert fragment in str(info.value)


# --- resolve_executable ----------------------------------------------------------------------


def executable_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_resolve_executable_looks_in_the_bot_directory_first_then_path(tmp_path, monkeypatch):
    bot_dir, on_path = tmp_path / "bot", tmp_path / "bin"
    executable_file(on_path / "tool")
    executable_file(on_path / "shared")
    executable_file(bot_dir / "shared")
    executable_file(bot_dir / "venv" / "bin" / "gunicorn")
    (bot_dir / "plain").write_text("not executable")
    monkeypatch.setenv("PATH", str(on_path))
    assert resolve_executable("shared", bot_dir) == str(bot_dir / "shared")
    assert resolve_executable("tool", bot_dir) == str(on_path / "tool")
    assert resolve_executable("venv/bin/gunicorn", bot_dir) == str(bot_dir / "venv/bin/gunicorn")
    assert resolve_executable("./venv/bin/gunicorn", str(bot_dir)) == str(
        bot_dir / "venv/bin/gunicorn"
    )
    assert resolve_executable(str(on_path / "tool"), bot_dir) == str(on_path / "tool")
    assert resolve_executable("plain", bot_dir) is None
    assert resolve_executable("missing", bot_dir) is None
    assert resolve_executable("bin/tool", bot_dir) is None  # relative to the bot, not the cwd


# --- check and start_all ---------------------------------------------------------------------


def test_check_says_which_program_each_bot_runs(tmp_path):
    executable_file(tmp_path / "web" / "serve")
    config = write_config(
        tmp_path / "bot_config.yaml",
        {
            "Script": {"script": "m.py", "directory": "web"},
            "Local": {"command": "serve --port 80", "directory": "web"},
            "OnPath": {"command": ["sh", "-c", "exit 0"], "directory": "web"},
            "Missing": {"command": "gunicornx app:app", "directory": "web"},
        },
    )
    result = cli(config, "check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [  # write_config sorts the bots
        f"{config}: OK, 4 bots: Local, Missing, OnPath, Script",
        f"  Local: {tmp_path / 'web' / 'serve'} --port 80",
        "  Missing: gunicornx app:app (not found)",
        f"  OnPath: {shutil.which('sh')} -c 'exit 0' (found on PATH)",
        f"  Script: {sys.executable} m.py",
    ]
    assert (
        f"warning: bot 'Missing': executable 'gunicornx' not found in {tmp_path / 'web'} or on PATH"
        in result.stderr
    )


ROOT = Path(__file__).parent.parent


def test_example_config_passes_check():
    result = cli(ROOT / "bot_config-example.yaml", "check")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_commented_out_examples_are_valid_and_every_key_is_documented():
    example = ROOT / "bot_config-example.yaml"
    text = re.sub(r"^(\s*)# (\s*[A-Za-z_]+:)", r"\1\2", example.read_text(), flags=re.M)
    config = Config.from_mapping(yaml.safe_load(text), example)
    assert "Web" in config.bots and config.settings.hooks.on_update is not None
    assert config.warnings == ()
    readme = (ROOT / "README.md").read_text()
    for cls in (GlobalSettings, BotConfig, Hooks):
        for field in attrs.fields(cls):
            assert field.name == "name" or f"`{field.name}`" in readme, field.name


def test_start_all_prints_each_config_warning_once(tmp_path, manager_factory):
    config = write_config(tmp_path / "bot_config.yaml", {}, restart_dealy=1)
    manager = manager_factory(config).wait_ready()
    assert manager.stop() == 0
    output = manager.output()
    assert output.count("unknown key 'restart_dealy'") == 1, output
    assert "trio-orch: warning: " in output
    log = (tmp_path / "logs" / "bot_manager.log").read_text()
    assert log.count("unknown key 'restart_dealy'") == 1
