"""The CLI without a manager: version, help, messages, the offline table, init, completion.

Most tests call :func:`main` in-process (fast); the ones about imports and shells run
``python -m trio_orchestrator`` or the shells themselves.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import CLI, write_config

from trio_orchestrator import __version__
from trio_orchestrator import cli as cli_module
from trio_orchestrator.cli import _parser, main
from trio_orchestrator.procfs import process_start_ticks
from trio_orchestrator.runner import describe_exit
from trio_orchestrator.state import BotRecord, StateStore, Write
from trio_orchestrator.units import signal_name


@pytest.fixture
def config(tmp_path):
    """Three configured bots (Alpha, Beta, Gamma); no manager, no db yet."""
    bots = {
        name: {"script": "main.py", "directory": ".", "description": f"the {name}"}
        for name in ("Alpha", "Beta", "Gamma")
    }
    return write_config(tmp_path / "bot_config.yaml", bots)


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def record(store_path: Path, *records: BotRecord) -> None:
    store = StateStore(store_path)
    try:
        store.commit([Write(item) for item in records])
    finally:
        store.close()


# ----- version and help -----


def test_version_is_the_package_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"trio-orch {__version__}"
    assert importlib.metadata.version("trio-orch") == __version__


def test_help_has_defaults_examples_and_exit_codes(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "(default: ./bot_config.yaml)" in out
    assert "examples:" in out and "trio-orch start_all" in out
    assert "exit codes:" in out
    for exit_code in ("0", "1", "2", "3"):
        assert f"\n  {exit_code}  " in out
    assert "_bots" not in out.split("exit codes:")[0]  # the hidden helper command


def _all_parsers(parser: argparse.ArgumentParser):
    yield "trio-orch", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if not name.startswith("_"):
                    yield name, sub


def test_every_command_and_option_has_help_with_its_default(capsys):
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helped = {choice.dest for choice in commands._choices_actions}
    assert helped == {name for name in commands.choices if not name.startswith("_")}
    for name, sub in _all_parsers(parser):
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, (name, action.dest)
            takes_value = action.option_strings and action.nargs != 0
            if takes_value or action.nargs == "?" or action.dest == "json":
                assert "default" in action.help, (name, action.dest, action.help)
        if name != "trio-orch":
            code, out, _ = run(capsys, name, "--help")
            assert code == 0 and sub.description.splitlines()[0] in out


def test_bad_usage_exits_2(capsys):
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "--color", "sometimes", "list")[0] == 2


# ----- messages that say what to do next -----


def test_unknown_bot_lists_the_known_ones(config, capsys):
    code, _, err = run(capsys, "--config", config, "stop", "Nope")
    assert code == 2
    assert "unknown bot 'Nope' (known bots: Alpha, Beta, Gamma)" in err
    code, _, err = run(capsys, "--config", config, "status", "Nope")
    assert code == 2
    assert "known bots: Alpha, Beta, Gamma" in err


def test_no_manager_suggests_start_all_with_the_same_options(config, capsys):
    code, _, err = run(capsys, "--config", config, "stop", "Alpha")
    assert code == 3
    assert "no manager is running" in err
    assert f"start one with `trio-orch --config {config} start_all`" in err
    code, _, err = run(capsys, "--config", config, "--db", config.parent / "x.db", "stop", "Alpha")
    assert f"--db {config.parent / 'x.db'} start_all`" in err


def test_missing_config_names_the_option_and_init(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "bot_config.yaml"
    for command in (["list"], ["check"], ["start_all"]):
        code, _, err = run(capsys, "--config", missing, *command)
        assert code == 2, command
        assert "file not found" in err
        assert "--config" in err and f"trio-orch init {missing.parent}" in err
        assert len(err.strip().splitlines()) == 1


# ----- list without a manager -----


def test_list_shows_signal_names_and_a_summary(config, capsys):
    record(
        config.parent / "bot_states.db",
        BotRecord(name="Alpha", state="stopped", start_count=2, last_exit_code=-15),
        BotRecord(name="Beta", state="exited", start_count=1, last_exit_code=1),
    )
    code, out, _ = run(capsys, "--config", config, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "manager: not running"
    alpha = next(line for line in lines if line.startswith("Alpha"))
    beta = next(line for line in lines if line.startswith("Beta"))
    assert "SIGTERM" in alpha and "-15" not in alpha
    assert " 1 " in beta.split("the Beta")[0]
    assert lines[-1] == "3 bots: 1 exited, 2 stopped"
    document = json.loads(run(capsys, "--config", config, "list", "--json")[1])
    assert [bot["last_exit_code"] for bot in document["bots"]] == [-15, 1, None]


def test_one_bot_is_not_bots(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", {"Solo": {"script": "m.py", "directory": "."}})
    assert run(capsys, "--config", config, "list")[1].splitlines()[-1] == "1 bot: 1 stopped"
    assert "OK, 1 bot: Solo" in run(capsys, "--config", config, "check")[1]


def test_offline_list_marks_bots_left_running_as_orphaned(config, capsys):
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = process_start_ticks(survivor.pid)
        record(
            config.parent / "bot_states.db",
            BotRecord(name="Alpha", state="running", pid=survivor.pid, pid_start_ticks=ticks),
            # Same pid, another start time: the pid was reused, not our bot.
            BotRecord(name="Beta", state="running", pid=survivor.pid, pid_start_ticks=ticks + 1),
        )
        code, out, _ = run(capsys, "--config", config, "list")
        assert code == 0
        rows = {line.split()[0]: line for line in out.splitlines()[2:]}
        assert "running (orphaned: manager not running)" in rows["Alpha"]
        assert "orphaned" not in rows["Beta"]
        assert out.splitlines()[-1] == "3 bots: 1 running, 1 orphaned, 1 stopped"
        document = json.loads(run(capsys, "--config", config, "list", "--json")[1])
        bots = {bot["name"]: bot for bot in document["bots"]}
        assert bots["Alpha"]["state"] == "running" and bots["Alpha"]["orphaned"] is True
        assert bots["Beta"]["orphaned"] is False and bots["Gamma"]["orphaned"] is False
    finally:
        survivor.kill()
        survivor.wait()
    # Ended: no longer orphaned.
    document = json.loads(run(capsys, "--config", config, "list", "--json")[1])
    assert not any(bot["orphaned"] for bot in document["bots"])


def test_commands_that_need_no_manager_do_not_import_trio(config):
    code = textwrap.dedent(
        f"""
        import sys
        from trio_orchestrator.cli import main
        for argv in (["--version"], ["list"], ["status", "Alpha"], ["stop", "Alpha"],
                     ["_bots"], ["completion", "bash"]):
            main(["--config", {str(config)!r}, *argv])
        assert "trio" not in sys.modules, "trio imported"
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----- init -----


def test_init_writes_a_config_that_check_accepts(tmp_path, capsys):
    target = tmp_path / "mybots"
    code, out, _ = run(capsys, "init", target)
    assert code == 0
    assert f"cd {target}" in out
    config = target / "bot_config.yaml"
    assert config.read_text().startswith("# trio-orch configuration")
    assert (target / "bots" / "example" / "main.py").is_file()
    code, out, err = run(capsys, "--config", config, "check")
    assert code == 0 and err == ""
    assert "OK, 1 bot: Example" in out


@pytest.mark.parametrize("existing", ["bot_config.yaml", "bots/example/main.py"])
def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path, capsys, existing):
    (tmp_path / existing).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / existing).write_text("mine\n")
    code, _, err = run(capsys, "init", tmp_path)
    assert code == 1
    assert "already exists" in err and "nothing written" in err
    assert (tmp_path / existing).read_text() == "mine\n"
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [existing]


def test_init_template_explains_every_supported_key():
    import attrs

    from trio_orchestrator.config import BotConfig, GlobalSettings

    template = (Path(cli_module.__file__).parent / "templates" / "bot_config.yaml").read_text()
    keys = {field.name for field in attrs.fields(BotConfig) + attrs.fields(GlobalSettings)}
    for key in keys - {"name"}:
        assert f" {key}:" in template, key


# ----- completion -----


def test_bots_helper_prints_names_and_is_quiet_on_errors(config, tmp_path, capsys):
    assert run(capsys, "--config", config, "_bots")[1:] == ("Alpha\nBeta\nGamma\n", "")
    code, out, err = run(capsys, "--config", tmp_path / "missing.yaml", "_bots")
    assert code == 2 and out == err == ""


def _script(capsys, shell: str, path: Path) -> Path:
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0
    path.write_text(out)
    return path


def test_bash_completion_parses_and_completes(config, tmp_path, capsys):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    script = _script(capsys, "bash", tmp_path / "trio-orch.bash")
    subprocess.run([bash, "-n", str(script)], check=True)
    # Complete the way bash would, with the trio-orch of this environment.
    program = shutil.which("trio-orch", path=str(Path(sys.executable).parent))
    if program is None:
        pytest.skip("the trio-orch console script is not installed beside this Python")
    probe = textwrap.dedent(
        """
        source "$1"
        complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _trio_orch;
                           echo "${COMPREPLY[*]}"; }
        complete_words "$2" --config "$3" restart ""
        complete_words "$2" --config "$3" status Alpha --j
        complete_words "$2" --co
        complete_words "$2" --color ""
        complete_words "$2" st
        complete_words "$2" completion ""
        complete_words "$2" --config "$3" logs -
        complete_words "$2" --config "$3" history Alpha --j
        complete_words "$2" export --i
        """
    )
    result = subprocess.run(
        [bash, "-c", probe, "probe", str(script), program, str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "Alpha Beta Gamma",
        "--json",
        "--config --commands --color",
        "auto always never",
        "start_all start stop status status_all",
        "bash zsh",
        "-n --lines -f --follow -h --help",
        "--json",
        "--image --include-secrets",
    ]


def test_zsh_completion_parses(tmp_path, capsys):
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    script = _script(capsys, "zsh", tmp_path / "_trio-orch")
    assert script.read_text().startswith("#compdef trio-orch\n")
    subprocess.run([zsh, "-n", str(script)], check=True)
    # Sourced into an interactive-style shell, it registers itself.
    check = f"autoload -U compinit && compinit -u -d {tmp_path}/zcd; source {script}; "
    check += "print -r -- ${_comps[trio-orch]}"
    result = subprocess.run([zsh, "-f", "-c", check], capture_output=True, text=True)
    assert result.stdout.strip() == "_trio_orch", result.stderr


def test_cli_module_runs_as_a_script():
    result = subprocess.run([*CLI, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"trio-orch {__version__}"


def test_exit_codes_read_the_same_in_the_cli_and_in_the_exit_records():
    assert signal_name(15) == "SIGTERM" and signal_name(99) == "signal 99"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-99) == "killed by signal 99"
    assert describe_exit(3) == "exited with code 3"
