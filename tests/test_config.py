from __future__ import annotations

import sys

import pytest
from helpers import cli, write_config

from trio_orchestrator.config import load_config
from trio_orchestrator.errors import ConfigError


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
