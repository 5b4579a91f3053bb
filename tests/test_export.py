"""``trio-orch export`` (issue 14): golden files for the example config, the mapping of
every bot form and key, and validation of the output by the engines' own tools.

Golden files live in ``tests/golden/export/<format>/``; the example config is read as if it
were ``/srv/bots/bot_config.yaml`` (so paths do not depend on the checkout) and the
interpreter running the tests is written as ``@PYTHON@``. Regenerate them with
``TRIO_ORCH_UPDATE_GOLDEN=1 pytest tests/test_export.py`` and review the diff.

The validators: ``systemd-analyze verify`` (Debian's systemd), ``docker-compose config``
(Debian's docker-compose, installed by .ci/run) and ``kubernetes-validate --strict``
(PyPI, schemas bundled; a dev dependency). ``kubectl`` cannot validate offline: even
``create --dry-run=client`` asks the API server for its schema.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import write_config

from trio_orchestrator.cli import main
from trio_orchestrator.config import Config, load_config
from trio_orchestrator.export import (
    SYSTEMD_VERSION_FOR_BACKOFF,
    export_compose,
    export_kubernetes,
    export_systemd,
    export_systemd_self,
    systemd_quote,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "bot_config-example.yaml"
GOLDEN = Path(__file__).parent / "golden" / "export"
FAKE_ROOT = Path("/srv/bots")
UPDATE = os.environ.get("TRIO_ORCH_UPDATE_GOLDEN") == "1"


def example_config(path: Path = FAKE_ROOT / "bot_config.yaml") -> Config:
    return Config.from_mapping(yaml.safe_load(EXAMPLE.read_text()), path)


def exports(config: Config, base: Path) -> dict:
    """Each golden format: (the directory its files are relative to, the Export)."""
    return {
        "systemd": (base / "systemd", export_systemd(config, base / "systemd")),
        "systemd-self": (
            base / "systemd-self",
            export_systemd_self(config, base / "systemd-self"),
        ),
        "compose": (base, export_compose(config, base / "compose.yaml")),
        "kubernetes": (base / "k8s", export_kubernetes(config, base / "k8s" / "bots.yaml")),
    }


# ----- golden files -----


@pytest.mark.parametrize("fmt", ["systemd", "systemd-self", "compose", "kubernetes"])
def test_example_config_matches_the_golden_files(fmt):
    base, result = exports(example_config(), FAKE_ROOT)[fmt]
    actual = {
        str(path.relative_to(base)): text.replace(sys.executable, "@PYTHON@")
        for path, text in result.files.items()
    }
    actual["warnings.txt"] = "".join(f"{line}\n" for line in result.warnings)
    golden = GOLDEN / fmt
    if UPDATE:
        shutil.rmtree(golden, ignore_errors=True)
        golden.mkdir(parents=True)
        for name, text in actual.items():
            (golden / name).write_text(text)
    expected = {path.name: path.read_text() for path in golden.iterdir()}
    assert sorted(actual) == sorted(expected)
    for name, text in actual.items():
        assert text == expected[name], f"{fmt}/{name} differs (TRIO_ORCH_UPDATE_GOLDEN=1)"


def test_example_systemd_units_say_what_the_config_says():
    files = export_systemd(example_config(), FAKE_ROOT / "u").files
    crasher = files[FAKE_ROOT / "u" / "trio-orch-Crasher.service"]
    assert "Restart=on-failure\n" in crasher
    assert "RestartSec=2\n" in crasher
    assert "StartLimitBurst=3\n" in crasher  # the first start and two restarts
    assert "KillMode=control-group\n" in crasher
    assert "KillSignal=SIGTERM\n" in crasher
    assert f"ExecStart=@PY {FAKE_ROOT}/examples/crasher/main.py\n" in crasher.replace(
        sys.executable, "@PY"
    )
    greeter = files[FAKE_ROOT / "u" / "trio-orch-Greeter.service"]
    assert "TimeoutStopSec=5\n" in greeter
    target = files[FAKE_ROOT / "u" / "trio-orch.target"]
    assert target.count("Wants=trio-orch-") == len(example_config().bots)


# ----- every bot form and key -----


@pytest.fixture
def full(tmp_path):
    """A command bot with every key set, and a script bot with the others."""
    web = tmp_path / "web"
    web.mkdir()
    (web / "run.sh").write_text("#!/bin/sh\nexec sleep 1000\n")
    (web / "run.sh").chmod(0o755)
    (web / ".env").write_text('TOKEN=s3cret\nexport API_KEY="abc def"\nPLAIN=x # note\nPASS=a$b\n')
    bot = tmp_path / "bot"
    bot.mkdir()
    (bot / "main.py").write_text("print('hi')\n")
    bots = {
        "Web_1": {
            "command": "./run.sh --bind 127.0.0.1:8000 'a b' '$HOME' 100%",
            "directory": "web",
            "env_file": ".env",
            "env": {"MODE": "prod", "TOKEN": "override", "PRICE": "5$"},
            "stop_signal": "INT",
            "stop_timeout": 7,
            "heartbeat_timeout": 30,
            "heartbeat_grace": 60,
            "max_memory": "300MB",
            "restart": "always",
            "restart_backoff": 2,
            "max_restart_delay": 300,
            "restart_window": 600,
            "failed_cooldown": 1800,
            "autostart": False,
            "hooks": {"on_failed": ["notify-send", "Web failed"]},
            "repo_url": "https://example.com/web.git",
            "rollback_on_failure": True,
            "log_max_bytes": "1MiB",
            "color": "red",
        },
        "Bot": {
            "script": "main.py",
            "directory": "bot",
            "args": ["--name", "x y"],
            "restart": "never",
            "stop_timeout": 0,
            "heartbeat_timeout": 5,
        },
    }
    path = write_config(tmp_path / "bot_config.yaml", bots, metrics_listen="127.0.0.1:9464")
    return load_config(path)


def documents(text):
    """Kubernetes documents by ``Kind/name``."""
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in yaml.safe_load_all(text)}


def warned(result, bot, key):
    return [line for line in result.warnings if line.startswith(f"bot {bot!r}: {key}: ")]


def test_systemd_maps_every_key(full, tmp_path):
    result = export_systemd(full, tmp_path / "u")
    web = result.files[tmp_path / "u" / "trio-orch-Web_1.service"]
    directory = tmp_path / "web"
    assert f"WorkingDirectory={directory}\n" in web
    assert f'ExecStart={directory}/run.sh --bind 127.0.0.1:8000 "a b" "$$HOME" 100%%\n' in web
    assert "Environment=PYTHONUNBUFFERED=1\nEnvironment=MODE=prod\n" in web
    assert 'Environment="PRICE=5$"\n' in web  # no $ expansion in Environment=
    assert f"EnvironmentFile={directory}/.env\n" in web
    assert "Restart=always\n" in web and "RestartForceExitStatus" not in web
    assert "RestartSec=5\nRestartSteps=6\nRestartMaxDelaySec=300\n" in web  # 5*2**6 >= 300
    assert "StartLimitIntervalSec=600\nStartLimitBurst=4\n" in web
    assert "KillSignal=SIGINT\nTimeoutStopSec=7\nMemoryMax=300000000\n" in web
    assert "[Install]" not in web  # autostart: false
    target = result.files[tmp_path / "u" / "trio-orch.target"]
    assert "Web_1" not in target and "Wants=trio-orch-Bot.service" in target
    bot = result.files[tmp_path / "u" / "trio-orch-Bot.service"]
    assert f'{tmp_path}/bot/main.py --name "x y"\n' in bot
    assert "Restart=no\n" in bot
    assert "TimeoutStopSec=1ms\n" in bot  # 0 would mean "no timeout" to systemd
    for key in (
        "hooks.on_failed",
        "repo_url",
        "rollback_on_failure",
        "log_max_bytes",
        "failed_cooldown",
        "color",
        "restart_backoff",
        "heartbeat_timeout",
    ):
        assert warned(result, "Web_1", key), key
    assert any("TOKEN also in env_file" in line for line in warned(result, "Web_1", "env"))
    assert len(warned(result, "Web_1", "env_file")) == 2  # export lines, inline comment
    assert warned(result, "Bot", "heartbeat_timeout")
    assert any(line.startswith("global_settings.metrics_listen") for line in result.warnings)


def test_systemd_self_runs_start_all(full, tmp_path):
    result = export_systemd_self(full, tmp_path / "u", user="daemon")
    unit = result.files[tmp_path / "u" / "trio-orch.service"]
    assert f" -m trio_orchestrator --config {full.path} start_all\n" in unit
    assert "KillMode=mixed\n" in unit and "User=daemon\n" in unit
    assert "TimeoutStopSec=22\n" in unit  # the longest stop_timeout and a margin
    assert result.warnings == ()


def test_compose_maps_every_key(full, tmp_path):
    out = tmp_path / "deploy" / "compose.yaml"
    result = export_compose(full, out)
    document = yaml.safe_load(result.files[out])
    web, bot = document["services"]["Web_1"], document["services"]["Bot"]
    assert web["image"] == "trio-orch-web-1" and "build" not in web
    assert warned(result, "Web_1", "command")  # a command bot needs an image
    assert web["command"][:4] == [
        "sh",
        "-c",
        'touch "$$TRIO_ORCH_HEARTBEAT_FILE" && exec "$$@"',
        "sh",
    ]
    assert web["command"][4:] == ["./run.sh", "--bind", "127.0.0.1:8000", "a b", "$$HOME", "100%"]
    assert web["restart"] == "unless-stopped" and web["profiles"] == ["manual"]
    assert web["stop_signal"] == "SIGINT" and web["stop_grace_period"] == "7s"
    assert web["environment"]["PRICE"] == "5$$"
    assert web["env_file"] == [str(tmp_path / "web" / ".env")]
    assert web["mem_limit"] == 300_000_000
    assert web["healthcheck"]["start_period"] == "60s" and web["healthcheck"]["retries"] == 1
    assert web["volumes"][0]["target"] == "/app"
    assert bot["restart"] == "no" and bot["stop_grace_period"] == "0s"
    assert bot["build"] == {
        "context": str(tmp_path / "bot"),
        "dockerfile": "../deploy/Dockerfile.Bot",
    }
    dockerfile = result.files[out.parent / "Dockerfile.Bot"]
    assert 'CMD ["python", "main.py", "--name", "x y"]' in dockerfile
    for key in ("heartbeat_timeout", "max_restart_attempts", "restart_delay", "hooks.on_failed"):
        assert warned(result, "Web_1", key), key
    assert "PASS: docker compose v2 expands" in warned(result, "Web_1", "env_file")[0]
    assert any(line.startswith("global_settings.metrics_listen") for line in result.warnings)


def test_compose_on_failure_without_restarts_is_no(tmp_path):
    (tmp_path / "main.py").write_text("")
    bots = {"A": {"script": "main.py", "directory": ".", "max_restart_attempts": 0}}
    config = load_config(write_config(tmp_path / "c.yaml", bots))
    result = export_compose(config, tmp_path / "compose.yaml")
    # docker reads on-failure:0 as "no limit"
    assert (
        yaml.safe_load(result.files[tmp_path / "compose.yaml"])["services"]["A"]["restart"] == "no"
    )
    assert warned(result, "A", "restart_delay") == []


def test_compose_with_an_image_builds_nothing(full, tmp_path):
    out = tmp_path / "compose.yaml"
    result = export_compose(full, out, image="registry.example/bots-{name}:1")
    services = yaml.safe_load(result.files[out])["services"]
    assert services["Bot"]["image"] == "registry.example/bots-bot:1"
    assert "build" not in services["Bot"] and list(result.files) == [out]


def test_kubernetes_maps_every_key(full, tmp_path):
    out = tmp_path / "k8s.yaml"
    result = export_kubernetes(full, out)
    docs = documents(result.files[out])
    assert list(docs) == ["Deployment/bot", "Secret/web-1-env", "Deployment/web-1"]
    secret, web, bot = docs["Secret/web-1-env"], docs["Deployment/web-1"], docs["Deployment/bot"]
    assert secret["stringData"] == {"TOKEN": "", "API_KEY": "", "PLAIN": "", "PASS": ""}
    assert "s3cret" not in result.files[out]  # never a secret without --include-secrets
    assert "kubectl create secret generic web-1-env" in warned(result, "Web_1", "env_file")[0]
    assert web["spec"]["replicas"] == 0  # autostart: false
    assert bot["spec"]["replicas"] == 1 and bot["spec"]["strategy"] == {"type": "Recreate"}
    pod = web["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 7
    (container,) = pod["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "web-1-env"}}]
    assert {"name": "PRICE", "value": "5$$"} in container["env"]  # $(X) is expanded
    assert "$$HOME" in container["command"]
    assert container["resources"] == {"limits": {"memory": "300000000"}}
    probe = container["livenessProbe"]
    assert probe["initialDelaySeconds"] == 60 and probe["failureThreshold"] == 1
    assert probe["exec"]["command"][-1].endswith("-le 30")
    assert pod["volumes"] == [{"name": "heartbeat", "emptyDir": {"medium": "Memory"}}]
    assert warned(result, "Web_1", "stop_signal") == []  # no image given: its STOPSIGNAL
    assert warned(result, "Bot", "restart") and warned(result, "Bot", "max_restart_attempts")
    with_image = export_kubernetes(full, out, image="img")
    assert warned(with_image, "Web_1", "stop_signal")


def test_kubernetes_include_secrets_puts_them_in_the_secret_only(full, tmp_path):
    out = tmp_path / "k8s.yaml"
    result = export_kubernetes(full, out, include_secrets=True)
    docs = documents(result.files[out])
    secret, web = docs["Secret/web-1-env"], docs["Deployment/web-1"]
    assert secret["data"]["TOKEN"] == "czNjcmV0"  # base64 of s3cret
    assert "czNjcmV0" not in yaml.safe_dump(web)
    assert warned(result, "Web_1", "env_file") == []


def test_a_missing_env_file_is_a_warning(tmp_path):
    (tmp_path / "main.py").write_text("")
    config = load_config(
        write_config(
            tmp_path / "c.yaml", {"A": {"script": "main.py", "directory": ".", "env_file": "x"}}
        )
    )
    result = export_kubernetes(config, tmp_path / "k.yaml")
    assert any("env file" in line for line in warned(result, "A", "env_file"))


@pytest.mark.parametrize(
    ("word", "quoted"),
    [
        ("plain/path.py", "plain/path.py"),
        ("a b", '"a b"'),
        ("100%", "100%%"),
        ("$HOME", '"$$HOME"'),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("", '""'),
        (";", "\\;"),
        ("it's", '"it\'s"'),
    ],
)
def test_systemd_quote(word, quoted):
    assert systemd_quote(word) == quoted


def test_the_heartbeat_probe_passes_only_on_a_fresh_file(full, tmp_path):
    out = tmp_path / "k8s.yaml"
    bot = documents(export_kubernetes(full, out).files[out])["Deployment/bot"]
    probe = bot["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["command"]
    beat = tmp_path / "heartbeat"
    beat.touch()
    env = {**os.environ, "TRIO_ORCH_HEARTBEAT_FILE": str(beat)}
    assert subprocess.run(probe, env=env, check=False).returncode == 0
    old = beat.stat().st_mtime - 60
    os.utime(beat, (old, old))
    assert subprocess.run(probe, env=env, check=False).returncode != 0


# ----- the CLI -----


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_warns_and_refuses_to_overwrite(full, tmp_path, capsys):
    config = ["--config", full.path]
    code, out, err = run(capsys, *config, "export", "systemd", tmp_path / "units")
    assert code == 0 and "wrote" in out
    assert (tmp_path / "units" / "trio-orch-Web_1.service").is_file()
    lines = err.splitlines()
    assert lines and all(line.startswith("trio-orch: warning: export systemd: ") for line in lines)
    assert any("bot 'Web_1': heartbeat_timeout:" in line for line in lines)
    # The same text again is no overwrite; a file edited since is.
    assert run(capsys, *config, "export", "systemd", tmp_path / "units")[0] == 0
    unit = tmp_path / "units" / "trio-orch-Bot.service"
    unit.write_text(unit.read_text() + "# edited\n")
    code, _, err = run(capsys, *config, "export", "systemd", tmp_path / "units")
    assert code == 1 and "--force" in err and str(unit) in err
    assert unit.read_text().endswith("# edited\n")
    code, _, _ = run(capsys, *config, "export", "systemd", tmp_path / "units", "--force")
    assert code == 0


def test_cli_compose_and_kubernetes_share_identical_dockerfiles(full, tmp_path, capsys):
    config = ["--config", full.path]
    assert run(capsys, *config, "export", "compose", tmp_path / "compose.yaml")[0] == 0
    assert run(capsys, *config, "export", "kubernetes", tmp_path / "k8s.yaml")[0] == 0


def test_cli_rejects_options_of_other_targets(full, tmp_path, capsys):
    code, _, err = run(
        capsys, "--config", full.path, "export", "compose", tmp_path / "c.yaml", "--user", "x"
    )
    assert code == 2 and "--user" in err
    assert not (tmp_path / "c.yaml").exists()


def test_cli_self_unit_names_the_config_absolutely(full, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(full.path.parent)
    code, _, _ = run(capsys, "--config", "bot_config.yaml", "export", "systemd", "--self", "u")
    assert code == 0
    unit = (full.path.parent / "u" / "trio-orch.service").read_text()
    assert f"--config {full.path} start_all" in unit


# ----- validation by the engines' own tools -----


def tool(name: str) -> str:
    """The validator's path (this venv's first), or skip the test saying why."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.is_file() else shutil.which(name)
    if path is None:
        where = "pip install -e '.[dev]'" if name == "kubernetes-validate" else ".ci/run's apt-get"
        pytest.skip(f"{name} is not installed here (it comes from {where})")
    return path


def systemd_version() -> int:
    out = subprocess.run(
        [tool("systemd-analyze"), "--version"], capture_output=True, text=True, check=True
    )
    return int(re.match(r"systemd (\d+)", out.stdout)[1])


def verify_units(files) -> None:
    units = [str(path) for path in files if path.suffix in (".service", ".target")]
    proc = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    problems = proc.stderr.splitlines()
    if systemd_version() < SYSTEMD_VERSION_FOR_BACKOFF:  # warned about by the export
        problems = [
            line
            for line in problems
            if not re.search(r"Unknown key '(RestartSteps|RestartMaxDelaySec)'", line)
        ]
    assert proc.returncode == 0 and problems == [], proc.stderr


def write(result) -> None:
    for path, text in result.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_systemd_analyze_verifies_the_example_units(tmp_path):
    # The real checkout: systemd checks that ExecStart's program exists.
    for user in (None, "daemon"):
        result = export_systemd(load_config(EXAMPLE), tmp_path / str(user), user=user)
        write(result)
        verify_units(result.files)
    result = export_systemd_self(load_config(EXAMPLE), tmp_path / "self")
    write(result)
    verify_units(result.files)


def test_systemd_analyze_verifies_every_key(full, tmp_path):
    result = export_systemd(full, tmp_path / "units")
    write(result)
    verify_units(result.files)


def compose_config(path: Path) -> None:
    proc = subprocess.run(
        [tool("docker-compose"), "-f", str(path), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_docker_compose_accepts_the_example(tmp_path):
    tool("docker-compose")
    config = example_config(ROOT / "bot_config.yaml")
    result = export_compose(config, tmp_path / "compose.yaml")
    write(result)
    compose_config(tmp_path / "compose.yaml")


def test_docker_compose_accepts_every_key(full, tmp_path):
    tool("docker-compose")
    result = export_compose(full, tmp_path / "compose.yaml")
    write(result)
    compose_config(tmp_path / "compose.yaml")


def kubernetes_validate(path: Path) -> None:
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubernetes_schemas_accept_the_example(tmp_path):
    tool("kubernetes-validate")
    result = export_kubernetes(example_config(ROOT / "bot_config.yaml"), tmp_path / "k.yaml")
    write(result)
    kubernetes_validate(tmp_path / "k.yaml")


def test_kubernetes_schemas_accept_every_key(full, tmp_path):
    tool("kubernetes-validate")
    for options in ({}, {"include_secrets": True, "image": "ghcr.io/me/{name}:1"}):
        result = export_kubernetes(full, tmp_path / "k.yaml", **options)
        write(result)
        kubernetes_validate(tmp_path / "k.yaml")


def test_kubernetes_validate_rejects_what_it_should(tmp_path):
    """The validator is strict: an unknown field fails (so a pass means something)."""
    tool("kubernetes-validate")
    result = export_kubernetes(example_config(ROOT / "bot_config.yaml"), tmp_path / "k.yaml")
    text = result.files[tmp_path / "k.yaml"].replace("replicas: 1", "replicas: 1\n  replica: 1", 1)
    (tmp_path / "k.yaml").write_text(text)
    with pytest.raises(AssertionError):
        kubernetes_validate(tmp_path / "k.yaml")


# ----- the example with its commented-out keys: every key the product has -----

# How each key reaches the targets; a new key fails this test until the export handles it
# (maps it, or warns that a target cannot express it).
HANDLED = {
    "mapped": {
        "directory", "script", "command", "args", "python", "env", "env_file", "description",
        "autostart", "restart", "max_restart_attempts", "restart_delay", "stop_timeout",
        "healthy_uptime", "stop_signal", "restart_backoff", "max_restart_delay",
        "restart_window", "heartbeat_timeout", "heartbeat_grace", "max_memory",
    },
    "warned": {
        "color", "log_max_bytes", "log_backups", "failed_cooldown", "hooks", "repo_url",
        "auto_update", "force_sync", "preserve_files", "rollback_on_failure",
        "rollback_window", "metrics_listen", "web_token",
    },
    # The manager's own machinery, with no counterpart in a unit or a container.
    "manager only": {
        "log_directory", "command_poll_interval", "git_timeout", "hook_timeout",
    },
}  # fmt: skip


def test_every_config_key_is_handled():
    import attrs

    from trio_orchestrator.config import BotConfig, GlobalSettings

    keys = {field.name for cls in (BotConfig, GlobalSettings) for field in attrs.fields(cls)}
    handled = set().union(*HANDLED.values())
    assert keys - {"name"} - handled == set(), "a new key: map it in export.py or warn"


@pytest.fixture
def uncommented(tmp_path):
    """bot_config-example.yaml with every commented-out key in force (the Web bot too)."""
    text = re.sub(r"^(\s*)# (\s*[A-Za-z_]+:)", r"\1\2", EXAMPLE.read_text(), flags=re.M)
    (tmp_path / "bot_config.yaml").write_text(text)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    web = tmp_path / "web"
    web.mkdir()
    (web / "gunicorn").write_text("#!/bin/sh\n")
    (web / "gunicorn").chmod(0o755)
    (web / ".env").write_text("SECRET_KEY=x\n")
    config = load_config(tmp_path / "bot_config.yaml")
    assert "Web" in config.bots and config.bots["Web"].heartbeat_timeout == 30
    return config


def test_the_example_with_every_key_exports_and_validates(uncommented, tmp_path):
    systemd = export_systemd(uncommented, tmp_path / "units")
    write(systemd)
    verify_units(systemd.files)
    unit = systemd.files[tmp_path / "units" / "trio-orch-Web.service"]
    assert f"ExecStart={tmp_path}/web/gunicorn app:app --bind 127.0.0.1:8000\n" in unit
    assert "KillSignal=SIGINT\n" in unit and "MemoryMax=300000000\n" in unit
    assert "RestartSteps=" in unit  # global restart_backoff: 2
    compose = export_compose(uncommented, tmp_path / "compose.yaml")
    write(compose)
    compose_config(tmp_path / "compose.yaml")
    kubernetes = export_kubernetes(uncommented, tmp_path / "k8s.yaml")
    write(kubernetes)
    kubernetes_validate(tmp_path / "k8s.yaml")
    for result in (systemd, compose, kubernetes):
        for key in ("hooks.on_failed", "failed_cooldown"):
            assert warned(result, "Web", key), key
        for key in ("repo_url", "rollback_on_failure"):
            assert warned(result, "Greeter", key), key
        assert warned(result, "Web", "heartbeat_timeout") or result is kubernetes
        assert any(line.startswith("global_settings.metrics_listen") for line in result.warnings)
