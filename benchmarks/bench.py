#!/usr/bin/env python3
"""Benchmark trio-orch against supervisord, circus, honcho and bare processes (issue 5).

    python benchmarks/bench.py [--quick] [--runs N] [--json PATH] [--only S1,S7] [--systems a,b]

supervisor, circus and honcho are installed into benchmarks/.venv (created on first use);
trio-orch runs from the current interpreter (``sys.executable -m trio_orchestrator``), and so do
all bots. Every process the benchmark starts carries a per-session token in its command line
(the temp dir path or an argv marker) and is killed at the end, also on Ctrl-C or errors.
See benchmarks/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_BIN = HERE / ".venv" / "bin"
OTHER_PACKAGES = ("supervisor", "circus", "honcho")
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN = f"orchbench{uuid.uuid4().hex[:10]}"  # in every command line we start
BOT_MARK = f"{TOKEN}:bot"  # only in the command lines of bots (and their children)
FILL = (string.ascii_letters + string.digits)[:61]  # pads a flood line to 80 bytes
POLL_INTERVAL_DEFAULT = 2.0  # trio-orch's default command_poll_interval (SPEC 3)
# Extra global_settings for trio-orch (e.g. metrics_listen), from --trio-orch-setting.
TRIO_ORCH_EXTRA_SETTINGS: dict[str, object] = {}


@dataclass(frozen=True)
class Params:
    runs: int = 3
    fleet: int = 100  # S1, S4-S6
    big_fleet: int = 500  # S9 (0 = skip)
    flood_bots: int = 8
    flood_lines: int = 100_000
    crash_starts: int = 30
    crash_budget: float = 30.0  # after this many seconds S3 settles for crash_min_starts
    crash_min_starts: int = 3
    restarts: int = 10
    cpu_window: float = 20.0
    big_cpu_window: float = 10.0
    settle: float = 12.0  # "all bots up" to RSS/CPU sampling (trio's idle threads expire: 10 s)
    stop_timeout: float = 2.0  # S6b
    grace: float = 1.0  # S8: a grandchild alive this long after the stop survived it
    paced_bots: int = 10  # S10: bots printing one flushed line every paced_interval
    paced_interval: float = 0.005
    paced_seconds: float = 10.0
    logging_interval: float = 0.001  # S11: one bot logging 1,000 lines/s
    logging_seconds: float = 10.0


QUICK = Params(
    runs=1,
    fleet=20,
    big_fleet=0,
    flood_bots=4,
    flood_lines=20_000,
    crash_starts=10,
    crash_budget=3.0,
    crash_min_starts=2,
    restarts=2,
    cpu_window=0.5,
    settle=0.2,
    stop_timeout=1.0,
    grace=0.5,
    paced_bots=4,
    paced_seconds=1.0,
    logging_seconds=1.0,
)


class NotApplicable(Exception):
    """A system cannot do what a scenario asks; the message says why."""


# --------------------------------------------------------------------------- bot scripts

BOT_COMMON = f'''\
import os
import signal
import sys
import time

NAME, RUN_DIR, MARK = sys.argv[1:4]
ARGS = sys.argv[4:]
FILL = "{FILL}"


def mark(suffix="", pid=None):
    """Atomically write markers/<NAME><suffix> = '<pid> <time.monotonic()>'."""
    final = os.path.join(RUN_DIR, "markers", NAME + suffix)
    tmp = os.path.join(RUN_DIR, "markers", f".{{NAME}}{{suffix}}.{{os.getpid()}}")
    with open(tmp, "w") as f:
        f.write(f"{{pid or os.getpid()}} {{time.monotonic()!r}}")
    os.replace(tmp, final)


def sleep_forever():
    while True:
        time.sleep(3600)


def paced(emit):
    """S10/S11: call emit(i) for i < ARGS[0], one every ARGS[1] s, from the start time in the
    go file (time.monotonic() of the benchmark: one clock for all bots); bot k of ARGS[2]
    is shifted by k/ARGS[2] of an interval, so that the bots' writes are spread out."""
    lines, interval, bots = int(ARGS[0]), float(ARGS[1]), int(ARGS[2])
    go = os.path.join(RUN_DIR, "go")
    while not os.path.exists(go):
        time.sleep(0.005)
    with open(go) as f:
        start = float(f.read()) + int(NAME[-3:]) % bots * interval / bots
    for i in range(lines):
        if (delay := start + i * interval - time.monotonic()) > 0:
            time.sleep(delay)
        emit(i)
    mark(".done")
    sleep_forever()
'''

BOT_BODIES = {
    # S1, S4-S7, S9: up, marker, idle. S6b passes --ignore-term.
    "idle": """
if "--ignore-term" in ARGS:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
mark()
sleep_forever()
""",
    # S2: wait for the go file, then write ARGS[0] lines of 80 bytes in 1000-line blocks.
    "flood": """
lines = int(ARGS[0])
mark()
go = os.path.join(RUN_DIR, "go")
while not os.path.exists(go):
    time.sleep(0.005)
for start in range(0, lines, 1000):
    block = "".join(f"@{NAME}#{i:07d}#{FILL}\\n" for i in range(start, min(start + 1000, lines)))
    view = memoryview(block.encode())
    while view:
        view = view[os.write(1, view):]
sleep_forever()
""",
    # S10: one print(..., flush=True) per line, on a monotonic schedule. With
    # PYTHONUNBUFFERED=1 (every system here runs bots with it) that is two writes per line:
    # the text, then the newline.
    "paced": """
mark()
paced(lambda i: print(f"@{NAME}#{i:07d}#{FILL}", flush=True))
""",
    # S11: the logging module, a StreamHandler on stdout (one write and a flush per record).
    # Not "logging.py": the script's directory comes first on sys.path.
    "logbot": """
import logging
handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
log = logging.getLogger("bot")
log.addHandler(handler)
log.setLevel(logging.INFO)
mark()
paced(lambda i: log.info("@%s#%07d#%s", NAME, i, FILL))
""",
    # S3: note the start time, exit 1 at once.
    "crash": """
fd = os.open(os.path.join(RUN_DIR, "starts.txt"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
os.write(fd, f"{time.monotonic()!r}\\n".encode())
sys.exit(1)
""",
    # S8: start a sleeping grandchild in our own process group, then idle.
    "spawner": """
import subprocess
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", MARK, RUN_DIR])
mark(".grandchild", child.pid)
mark()
sleep_forever()
""",
}


def write_bot_scripts(bots_dir: Path) -> None:
    bots_dir.mkdir(parents=True, exist_ok=True)
    for kind, body in BOT_BODIES.items():
        (bots_dir / f"{kind}.py").write_text(BOT_COMMON + body)


# --------------------------------------------------------------------------- /proc helpers


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def read_proc(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def stat_fields(pid: int) -> list[bytes]:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...] (field 3 onwards)."""
    data = read_proc(pid, "stat")
    return data[data.rfind(b")") + 2 :].split() if data else []


def find_pids(*needles: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains every needle."""
    wanted = [n.encode() for n in needles]
    me = os.getpid()
    found = []
    for pid in all_pids():
        cmd = read_proc(pid, "cmdline")  # empty for zombies and kernel threads
        if pid != me and cmd and all(w in cmd for w in wanted):
            found.append(pid)
    return found


def is_alive(pid: int) -> bool:
    """True while the process exists, is not a zombie and is one of ours (pid reuse)."""
    fields = stat_fields(pid)
    return (
        bool(fields)
        and fields[0] not in (b"Z", b"X")
        and TOKEN.encode() in read_proc(pid, "cmdline")
    )


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid in all_pids():
        fields = stat_fields(pid)
        if fields:
            kids.setdefault(int(fields[1]), []).append(pid)
    return kids


def manager_tree(root: int) -> list[int]:
    """root and its descendants, leaving out bots and everything below them."""
    kids = children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid != root and BOT_MARK.encode() in read_proc(pid, "cmdline"):
            continue
        tree.append(pid)
        todo.extend(kids.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes themselves (children excluded), from /proc/PID/stat."""
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def syscalls(pids: list[int]) -> tuple[int, int]:
    """(read, write) system calls made so far by pids, all threads (/proc/PID/io)."""
    reads = writes = 0
    for pid in pids:
        io = dict(line.split(b": ") for line in read_proc(pid, "io").splitlines())
        reads, writes = reads + int(io.get(b"syscr", 0)), writes + int(io.get(b"syscw", 0))
    return reads, writes


def thread_ns(pids: list[int]) -> dict[tuple[int, str], int]:
    """{(pid, tid): nanoseconds run so far} of the live threads (/proc/PID/task/TID/schedstat)."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                if data := read_proc(pid, f"task/{tid}/schedstat"):
                    found[pid, tid] = int(data.split()[0])
    return found


def cpu_percent(pids: list[int], window: float) -> dict[str, float]:
    """CPU of pids over `window` seconds as % of one core, two ways.

    cpu_pct: per-thread nanoseconds, sampled every 50 ms so that threads ending in the window
    count up to their last sample. cpu_pct_ticks: utime+stime, exact but in 10 ms ticks.
    """
    first, last = thread_ns(pids), {}
    ticks0, t0 = cpu_seconds(pids), time.monotonic()
    while (elapsed := time.monotonic() - t0) < window:
        time.sleep(min(0.05, window - elapsed))
        last |= thread_ns(pids)
    ran = sum(ns - first.get(key, 0) for key, ns in last.items())
    return {
        "cpu_pct": ran / 1e9 / elapsed * 100,
        "cpu_pct_ticks": (cpu_seconds(pids) - ticks0) / elapsed * 100,
    }


def memory_kib(pids: list[int], field: bytes = b"Rss") -> int:
    """Sum of Rss (or Pss: shared pages divided among their users) from smaps_rollup."""
    total = 0
    for pid in pids:
        m = re.search(rb"^" + field + rb":\s+(\d+) kB", read_proc(pid, "smaps_rollup"), re.M)
        total += int(m[1]) if m else 0
    return total


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_matching(needle: str, timeout: float = 10.0) -> int:
    """SIGKILL every process whose command line contains needle; return how many were found."""
    victims = find_pids(needle)
    deadline = time.monotonic() + timeout
    while (left := find_pids(needle)) and time.monotonic() < deadline:
        kill_pids(left)
        time.sleep(0.05)
    return len(victims)


def wait_until(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.01):
    """Poll pred until it returns something truthy (returned); TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = pred()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s")
        time.sleep(interval)


# --------------------------------------------------------------------------- runs and fleets


@dataclass(frozen=True)
class Fleet:
    """The bots of one scenario run: `size` copies of bots/<kind>.py."""

    kind: str
    size: int
    args: tuple[str, ...] = ()
    crash_restart: bool = False  # restart at once after every exit (S3)
    stop_timeout: float = 10.0

    @property
    def names(self) -> list[str]:
        return [f"{self.kind}{i:03d}" for i in range(self.size)]


class Run:
    """The directory of one (system, scenario, run): config, markers/, logs/, console.log."""

    def __init__(self, path: Path, bots_dir: Path, fleet: Fleet):
        self.dir, self.bots_dir, self.fleet = path, bots_dir, fleet
        (path / "markers").mkdir(parents=True)
        (path / "logs").mkdir()
        self.tag = f"{path}/"  # in the command line of the manager and of every bot of this run

    def bot_argv(self, name: str) -> list[str]:
        """[script, *args] of a bot (the interpreter comes first, added by the system)."""
        return [str(self.bots_dir / f"{self.fleet.kind}.py"), *self.bot_args(name)]

    def bot_args(self, name: str) -> list[str]:
        return [name, self.tag, BOT_MARK, *self.fleet.args]

    def markers(self, suffix: str = "") -> dict[str, tuple[int, float]]:
        """{bot name: (pid, monotonic start time)} of the markers written so far."""
        found = {}
        for path in (self.dir / "markers").glob(f"*{suffix}"):
            name = path.name.removesuffix(suffix)
            if not name.startswith(".") and "." not in name:
                pid, stamp = path.read_text().split()
                found[name] = (int(pid), float(stamp))
        return found

    def bot_pids(self) -> list[int]:
        return find_pids(BOT_MARK, self.tag)


def manager_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}


# --------------------------------------------------------------------------- system adapters


class System:
    """A supervisor run in the foreground with its console redirected to console.log."""

    name = ""
    console_sink = False  # bot output is copied to the manager's console
    per_bot_logs = False  # bot output is written to logs/<Name>.log
    cannot: dict[str, str] = {}  # scenario id -> why this system cannot do it
    restart_jitter = 0.0  # S7: random pause before each restart, up to this many seconds

    def __init__(self, run: Run):
        self.run, self.fleet = run, run.fleet
        self.proc: subprocess.Popen | None = None
        self.launched_at = 0.0
        self._console = None

    # -- to be provided by each system
    def write_config(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def control(self, action: str, name: str) -> None:
        """Ask the running manager to *action* ("restart", "stop") one bot."""
        raise NotApplicable(f"{self.name} has no control channel")

    def restart(self, name: str) -> None:
        self.control("restart", name)

    def stop_bot(self, name: str) -> None:
        self.control("stop", name)

    # -- common behaviour
    def launch(self) -> None:
        self.write_config()
        self._console = open(self.run.dir / "console.log", "wb")  # noqa: SIM115 (closed in close)
        self.launched_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.run.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=manager_env(),
        )

    def manager_pids(self) -> list[int]:
        return manager_tree(self.proc.pid) if self.proc else []

    def shutdown(self) -> None:
        """Ask the manager to stop every bot and exit (returns at once)."""
        self.proc.send_signal(signal.SIGTERM)

    def is_down(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def check(self) -> None:
        """Raise if the manager died on its own (shows the end of its console)."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = (self.run.dir / "console.log").read_bytes()[-1500:].decode(errors="replace")
            raise RuntimeError(f"{self.name} exited early with {self.proc.returncode}:\n{tail}")

    def sinks(self) -> list[Sink]:
        names = self.fleet.names
        sinks = [Sink(self.run.dir / "console.log", names)] if self.console_sink else []
        if self.per_bot_logs:
            sinks += [Sink(self.run.dir / "logs" / f"{n}.log", [n]) for n in names]
        return sinks

    def ctl(self, *argv: str) -> None:
        """Run a control command of this system; raise if it fails or hangs."""
        done = subprocess.run(
            argv, check=False, cwd=self.run.dir, capture_output=True, timeout=30, env=manager_env()
        )
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace").strip()[-500:]
            command = f"{Path(argv[0]).name} ... {shlex.join(argv[-2:])}"
            raise RuntimeError(f"{command} exited {done.returncode}: {out}")

    def close(self) -> None:
        """Kill whatever is left of this run: the manager's group, then every process of the run."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        kill_matching(self.run.tag)
        if self._console:
            self._console.close()


class TrioOrch(System):
    name = "trio-orch"
    console_sink = per_bot_logs = True

    def config_path(self) -> Path:
        return self.run.dir / "bot_config.yaml"

    def write_config(self) -> None:
        fleet = self.fleet
        bot = {"script": f"{fleet.kind}.py", "directory": str(self.run.bots_dir)}
        # No rotation, like supervisord's stdout_logfile_maxbytes=0: the sink checks read
        # logs/<Name>.log only.
        settings = {"log_directory": "logs", "stop_timeout": fleet.stop_timeout, "log_max_bytes": 0}
        settings |= TRIO_ORCH_EXTRA_SETTINGS  # --trio-orch-setting KEY=VALUE
        if fleet.crash_restart:
            bot |= {"restart": "always", "restart_delay": 0, "max_restart_attempts": 1_000_000}
            settings |= {"restart_delay": 0, "max_restart_attempts": 1_000_000}
        config = {
            "bots": {n: {**bot, "args": self.run.bot_args(n)} for n in fleet.names},
            "global_settings": settings,
        }
        # JSON is valid YAML: no YAML library needed here.
        self.config_path().write_text(json.dumps(config, indent=2))

    def cli(self, *argv: str) -> list[str]:
        return [PY, "-m", "trio_orchestrator", "--config", str(self.config_path()), *argv]

    def command(self) -> list[str]:
        return self.cli("--color", "never", "start_all")

    def control(self, action: str, name: str) -> None:
        self.ctl(*self.cli(action, name))


class TrioOrchFile(TrioOrch):
    """S7 variant: `echo "restart NAME" >> bot_commands.txt` instead of the CLI."""

    name = "trio-orch (cmd file)"
    restart_jitter = POLL_INTERVAL_DEFAULT  # issue commands at random phases of the poll cycle

    def restart(self, name: str) -> None:
        with open(self.run.dir / "bot_commands.txt", "a") as f:
            f.write(f"restart {name}\n")


class Supervisord(System):
    name = "supervisord"
    per_bot_logs = True
    as_group = True  # stopasgroup/killasgroup (the benchmark's standard setting)

    def conf_path(self) -> Path:
        return self.run.dir / "supervisord.conf"

    def write_config(self) -> None:
        d, fleet = self.run.dir, self.fleet
        lines = [
            "[supervisord]",
            "nodaemon=true",
            f"logfile={d}/supervisord.log",
            f"pidfile={d}/supervisord.pid",
            f"childlogdir={d}/logs",
            "minfds=8192",
            "[unix_http_server]",
            f"file={d}/supervisor.sock",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{d}/supervisor.sock",
        ]
        for n in fleet.names:
            lines += [
                f"[program:{n}]",
                f"command={shlex.join([PY, *self.run.bot_argv(n)])}",
                f"directory={self.run.bots_dir}",
                f"stopwaitsecs={fleet.stop_timeout:g}",
                "redirect_stderr=true",
                f"stdout_logfile={d}/logs/{n}.log",
                "stdout_logfile_maxbytes=0",
            ]
            if self.as_group:
                lines += ["stopasgroup=true", "killasgroup=true"]
            if fleet.crash_restart:
                lines += ["autorestart=true", "startsecs=0", "startretries=1000000"]
        # one group: supervisord stops groups one after the other, the programs of a group at once
        lines += ["[group:bots]", f"programs={','.join(fleet.names)}"]
        self.conf_path().write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [str(VENV_BIN / "supervisord"), "-c", str(self.conf_path())]

    def control(self, action: str, name: str) -> None:
        conf = str(self.conf_path())
        self.ctl(str(VENV_BIN / "supervisorctl"), "-c", conf, action, f"bots:{name}")


class SupervisordDefaults(Supervisord):
    """S8 variant: supervisord's defaults (stopasgroup=false, killasgroup=false)."""

    name = "supervisord (defaults)"
    as_group = False


class Circus(System):
    name = "circus"
    per_bot_logs = True

    def endpoint(self) -> str:
        return f"ipc://{self.run.dir}/circus-ctl.sock"

    def write_config(self) -> None:
        d, fleet = self.run.dir, self.fleet
        lines = [
            "[circus]",
            f"endpoint = {self.endpoint()}",
            f"pubsub_endpoint = ipc://{d}/circus-pub.sock",
            "statsd = false",
        ]
        for n in fleet.names:
            lines += [
                f"[watcher:{n}]",
                f"cmd = {PY}",
                f"args = {shlex.join(self.run.bot_argv(n))}",
                f"working_dir = {self.run.bots_dir}",
                "numprocesses = 1",
                "copy_env = true",
                f"graceful_timeout = {fleet.stop_timeout:g}",
                "stdout_stream.class = FileStream",
                f"stdout_stream.filename = {d}/logs/{n}.log",
                "stderr_stream.class = FileStream",
                f"stderr_stream.filename = {d}/logs/{n}.err",
            ]
            if fleet.crash_restart:
                lines += ["respawn = true", "max_retry = -1"]
        (d / "circus.ini").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [str(VENV_BIN / "circusd"), str(self.run.dir / "circus.ini")]

    def control(self, action: str, name: str) -> None:
        circusctl = str(VENV_BIN / "circusctl")
        self.ctl(circusctl, "--endpoint", self.endpoint(), "--timeout", "30", action, name)


class Honcho(System):
    name = "honcho"
    console_sink = True
    cannot = {
        "S3": "honcho never restarts: when one process exits it stops all the others",
        "S7": "honcho has no control channel (no restart of one process)",
        "S6b": "honcho sends SIGKILL only after some process has exited by itself: when every "
        "bot ignores SIGTERM it never exits (seen: no exit after 30 s)",
    }

    def write_config(self) -> None:
        procfile = [
            f"{n}: exec {shlex.join([PY, *self.run.bot_argv(n)])}" for n in self.fleet.names
        ]
        (self.run.dir / "Procfile").write_text("\n".join(procfile) + "\n")

    def command(self) -> list[str]:
        procfile = str(self.run.dir / "Procfile")
        return [
            str(VENV_BIN / "honcho"),
            "start",
            "--no-colour",
            "-f",
            procfile,
            "-d",
            str(self.run.dir),
        ]


class Direct(System):
    """No supervisor: the benchmark itself starts, restarts and stops the bots."""

    name = "direct"
    per_bot_logs = True  # each bot's stdout goes straight to logs/<Name>.log
    cannot = {
        "S4": "no manager process",
        "S5": "no manager process",
    }

    def __init__(self, run: Run):
        super().__init__(run)
        self.bots: dict[str, subprocess.Popen] = {}
        self._stopping = threading.Event()
        self._loops: list[threading.Thread] = []

    def spawn(self, name: str) -> subprocess.Popen:
        with open(self.run.dir / "logs" / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [PY, *self.run.bot_argv(name)],
                cwd=self.run.bots_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=manager_env(),
            )
        self.bots[name] = proc
        return proc

    def _plain_loop(self, name: str) -> None:
        while not self._stopping.is_set():
            self.spawn(name).wait()

    def launch(self) -> None:
        self.launched_at = time.monotonic()
        for name in self.fleet.names:
            if self.fleet.crash_restart:
                loop = threading.Thread(target=self._plain_loop, args=(name,), daemon=True)
                loop.start()
                self._loops.append(loop)
            else:
                self.spawn(name)

    def manager_pids(self) -> list[int]:
        return []

    def _terminate(self, procs: list[subprocess.Popen]) -> None:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.fleet.stop_timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def shutdown(self) -> None:
        self._terminate(list(self.bots.values()))

    def restart(self, name: str) -> None:
        self._terminate([self.bots[name]])
        self.spawn(name)

    def stop_bot(self, name: str) -> None:
        self.bots[name].send_signal(signal.SIGTERM)  # the bot alone, as a naive script would

    def is_down(self) -> bool:
        return True

    def check(self) -> None:
        pass

    def close(self) -> None:
        self._stopping.set()
        for proc in self.bots.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for loop in self._loops:
            loop.join(5)
        for proc in self.bots.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        super().close()


# --------------------------------------------------------------------------- output sinks (S2)


@dataclass
class Sink:
    """A file that must receive every line of `bots` (a console or a per-bot log)."""

    path: Path
    bots: list[str]
    offset: int = 0
    carry: bytes = b""
    finals: int = 0  # complete final lines ("#<lines-1>#") seen so far

    def caught_up(self, final: bytes) -> bool:
        """Read what was appended since the last call; True once every bot's last line is in."""
        if self.finals < len(self.bots) and self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = self.carry + f.read()
            self.offset += len(data) - len(self.carry)
            cut = data.rfind(b"\n") + 1
            self.carry = data[cut:]
            self.finals += data.count(final, 0, cut)
        return self.finals >= len(self.bots)


PAYLOAD = re.compile(rb"@([a-z]+\d{3})#(\d{7})#" + FILL.encode() + rb"\Z")
BOT_NAME = re.compile(rb"[a-z]+\d{3}")


def verify_sink(sink: Sink, lines: int) -> dict[str, int]:
    """Every bot's lines complete, in order, unmixed, each attributed to the right bot."""
    expected = dict.fromkeys(sink.bots, 0)  # next sequence number of each bot
    received = dict.fromkeys(sink.bots, 0)
    garbled = out_of_order = 0
    for line in sink.path.read_bytes().split(b"\n"):
        at = line.find(b"@")
        if at < 0 or not BOT_NAME.match(line, at + 1):
            continue  # a line of the manager's own
        m = PAYLOAD.match(line, at)
        prefix_names = BOT_NAME.findall(line, 0, at)
        if not m or m[1].decode() not in received or (prefix_names and prefix_names[0] != m[1]):
            garbled += 1
            continue
        name, seq = m[1].decode(), int(m[2])
        out_of_order += seq != expected[name]
        expected[name] = seq + 1
        received[name] += 1
    return {
        "lost": sum(max(0, lines - n) for n in received.values()),
        "garbled": garbled,
        "out_of_order": out_of_order,
        "received": received,
    }


def check_sinks(sinks: list[Sink], lines: int) -> dict[str, int]:
    """verify_sink over all sinks: defects summed; lines_received = lines in every sink."""
    checks = [verify_sink(s, lines) for s in sinks]
    out = {k: sum(c[k] for c in checks) for k in ("lost", "garbled", "out_of_order")}
    out["defects"] = out["lost"] + out["garbled"] + out["out_of_order"]
    everywhere: dict[str, int] = {}
    for check in checks:
        for name, n in check["received"].items():
            everywhere[name] = min(n, everywhere.get(name, n))
    out["lines_received"] = sum(everywhere.values())
    return out


# --------------------------------------------------------------------------- scenarios


class Bench:
    """Runs one scenario for one system; holds parameters and the session's temp dir."""

    def __init__(self, params: Params, base: Path, keep: bool = False):
        self.p, self.base, self.keep = params, base, keep
        self.bots_dir = base / "bots"
        write_bot_scripts(self.bots_dir)
        self._seq = 0

    @contextlib.contextmanager
    def running(self, cls: type[System], scenario: str, fleet: Fleet) -> Iterator[System]:
        """A launched system in a fresh run directory, always cleaned up afterwards."""
        self._seq += 1
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self._seq:03d}-{scenario}-{cls.name}")
        run = Run(self.base / label, self.bots_dir, fleet)
        system = cls(run)
        try:
            system.launch()
            yield system
        finally:
            system.close()
            if not self.keep:
                shutil.rmtree(run.dir, ignore_errors=True)

    def wait_for_bots(self, system: System, suffix: str = "") -> dict[str, tuple[int, float]]:
        size = system.fleet.size

        def all_up():
            system.check()
            marks = system.run.markers(suffix)
            return marks if len(marks) >= size else None

        return wait_until(all_up, 30 + size * 0.2, f"markers of all {size} bots", interval=0.01)

    def timed_stop(self, system: System) -> float:
        """SIGTERM the manager (or stop bare bots): seconds until it exited and no bot is left."""
        t0 = time.monotonic()
        system.shutdown()
        wait_until(system.is_down, system.fleet.stop_timeout + 30, "manager exit", 0.005)
        t_down = time.monotonic()
        if not system.run.bot_pids():
            return t_down - t0  # the usual case: the manager exits after its last bot
        try:
            wait_until(lambda: not system.run.bot_pids(), 5, "exit of all bots", 0.02)
        except TimeoutError:
            left = len(system.run.bot_pids())
            raise RuntimeError(f"{left} bot processes left 5 s after the manager exited") from None
        return time.monotonic() - t0

    # S1, S4, S5, S6 (and S9 with the big fleet)
    def fleet(self, cls: type[System], size: int, cpu_window: float) -> dict:
        fleet = Fleet("idle", size)
        with self.running(cls, f"fleet{size}", fleet) as system:
            marks = self.wait_for_bots(system)
            out: dict = {"start_s": max(stamp for _, stamp in marks.values()) - system.launched_at}
            if system.manager_pids() and cpu_window:
                time.sleep(self.p.settle)
                pids = system.manager_pids()
                out["rss_mib"] = memory_kib(pids) / 1024
                out["pss_mib"] = memory_kib(pids, b"Pss") / 1024
                out["manager_processes"] = len(pids)
                out |= cpu_percent(pids, cpu_window)
                system.check()
            out["stop_s"] = self.timed_stop(system)
        return out

    # S6b
    def stop_ignoring_term(self, cls: type[System]) -> dict:
        fleet = Fleet("idle", self.p.fleet, ("--ignore-term",), stop_timeout=self.p.stop_timeout)
        with self.running(cls, "S6b", fleet) as system:
            self.wait_for_bots(system)
            return {"stop_s": self.timed_stop(system)}

    @staticmethod
    def wait_delivered(system: System, sinks: list[Sink], lines: int, timeout: float) -> None:
        """Wait until every sink has the last of the `lines` lines of each of its bots."""
        final = b"#%07d#" % (lines - 1)

        def delivered():
            system.check()
            return all(s.caught_up(final) for s in sinks)

        try:
            wait_until(delivered, timeout, "complete output in every sink", interval=0.02)
        except TimeoutError as exc:
            lost = check_sinks(sinks, lines)["lost"]
            raise RuntimeError(f"{exc}; {lost} lines lost") from None

    # S2
    def flood(self, cls: type[System]) -> dict:
        lines, bots = self.p.flood_lines, self.p.flood_bots
        fleet = Fleet("flood", bots, (str(lines),))
        with self.running(cls, "S2", fleet) as system:
            self.wait_for_bots(system)
            sinks, pids = system.sinks(), system.manager_pids()
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            (system.run.dir / "go").touch()
            self.wait_delivered(system, sinks, lines, 30 + bots * lines / 10_000)
            elapsed, cpu = time.monotonic() - t0, cpu_seconds(pids) - cpu0
            checks = check_sinks(sinks, lines)
        total = bots * lines
        out = {
            "seconds": elapsed,
            "lines_per_s": total / elapsed,
            "sinks_checked": len(sinks),
            **{k: checks[k] for k in ("lost", "garbled", "out_of_order", "defects")},
        }
        if pids:
            out |= {"manager_cpu_s": cpu, "cpu_us_per_line": cpu / total * 1e6}
        return out

    # S10, S11
    def paced(self, cls: type[System], kind: str, bots: int, interval: float, seconds: float):
        """`bots` bots each write one line every `interval` s for `seconds` s (bots/<kind>.py).

        Manager CPU (utime+stime, /proc/PID/stat) and its read/write system calls
        (/proc/PID/io) from the start of the first line until every line is in every sink.
        """
        lines = round(seconds / interval)
        fleet = Fleet(kind, bots, (str(lines), repr(interval), str(bots)))
        with self.running(cls, kind, fleet) as system:
            self.wait_for_bots(system)
            sinks, pids = system.sinks(), system.manager_pids()
            go, start = system.run.dir / "go", time.monotonic() + 0.1
            (tmp := go.with_suffix(".tmp")).write_text(repr(start))
            calls0, cpu0 = syscalls(pids), cpu_seconds(pids)
            tmp.replace(go)  # the bots read the start time from it: appear complete
            time.sleep(max(0.0, start + seconds - time.monotonic()))  # no polling meanwhile
            self.wait_delivered(system, sinks, lines, 30 + seconds)
            elapsed, cpu = time.monotonic() - start, cpu_seconds(pids) - cpu0
            calls = [b - a for a, b in zip(calls0, syscalls(pids), strict=True)]
            done = self.wait_for_bots(system, ".done")
            checks = check_sinks(sinks, lines)
        total = bots * lines
        out = {
            "lines": total,
            "seconds": elapsed,
            # how far the last bot fell behind its schedule (a manager slow to read the
            # pipes, or a busy machine, makes its writes wait)
            "bots_late_s": max(stamp for _, stamp in done.values()) - (start + seconds),
            "sinks_checked": len(sinks),
            **checks,
            "loadavg_1m": os.getloadavg()[0],  # the machine is shared: how busy it was
        }
        if pids:
            out |= {
                "manager_cpu_s": cpu,
                "cpu_percent": cpu / elapsed * 100,
                "us_per_line": cpu / total * 1e6,
                "reads_per_line": calls[0] / total,
                "writes_per_line": calls[1] / total,
            }
        return out

    # S3
    def crash_loop(self, cls: type[System]) -> dict:
        starts, budget, least = self.p.crash_starts, self.p.crash_budget, self.p.crash_min_starts
        with self.running(cls, "S3", Fleet("crash", 1, crash_restart=True)) as system:
            path = system.run.dir / "starts.txt"

            def enough():
                system.check()
                seen = path.read_bytes().count(b"\n") if path.exists() else 0
                late = time.monotonic() - system.launched_at > budget
                return seen >= starts or (late and seen >= least)

            wait_until(enough, budget + 30, f"{least} starts", interval=0.05)
            stamps = [float(x) for x in path.read_text().split()[:starts]]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        return {
            "gap_ms": statistics.median(gaps) * 1000,
            "gap_max_ms": max(gaps) * 1000,
            "starts": len(stamps),
        }

    # S7
    def restart(self, cls: type[System]) -> dict:
        fleet = Fleet("idle", 5)
        rng = random.Random(5)
        latencies, returns = [], []
        with self.running(cls, "S7", fleet) as system:
            self.wait_for_bots(system)
            for i in range(self.p.restarts):
                name = fleet.names[i % fleet.size]
                old_pid = system.run.markers()[name][0]
                time.sleep(0.1 + rng.uniform(0, cls.restart_jitter))
                t0 = time.monotonic()
                system.restart(name)
                returns.append(time.monotonic() - t0)

                def restarted(name=name, old_pid=old_pid):
                    system.check()
                    mark = system.run.markers().get(name)
                    return mark if mark and mark[0] != old_pid else None

                _, stamp = wait_until(restarted, 30, f"new instance of {name}")
                latencies.append(stamp - t0)
        return {
            "latency_ms": statistics.median(latencies) * 1000,
            "latency_mean_ms": statistics.mean(latencies) * 1000,
            "command_returns_ms": statistics.median(returns) * 1000,
        }

    # S8
    def grandchild(self, cls: type[System]) -> dict:
        with self.running(cls, "S8", Fleet("spawner", 1)) as system:
            name = system.fleet.names[0]
            bot_pid = self.wait_for_bots(system)[name][0]  # written after the grandchild's
            grandchild = system.run.markers(".grandchild")[name][0]
            out: dict = {}
            try:
                system.stop_bot(name)
                wait_until(lambda: not is_alive(bot_pid), 15, "bot exit")
                out["alive_after_bot_stop"] = outlives(grandchild, self.p.grace)
            except NotApplicable as exc:
                out["bot_stop"] = f"n/a: {exc}"
            if system.manager_pids():
                system.shutdown()
                wait_until(system.is_down, 30, "manager exit")
                out["alive_after_manager_stop"] = outlives(grandchild, self.p.grace)
        return out


def outlives(pid: int, grace: float) -> bool:
    """Whether pid is still alive `grace` seconds from now (returns early once it is gone)."""
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not is_alive(pid), grace, "exit", interval=0.05)
    return is_alive(pid)


@dataclass(frozen=True)
class Scenario:
    key: str
    ids: str  # the issue-5 scenario ids it measures
    title: str
    run: Callable[[Bench, type[System]], dict]
    systems: tuple[type[System], ...]


MAIN_SYSTEMS = (TrioOrch, Supervisord, Circus, Honcho, Direct)

SCENARIOS = (
    Scenario(
        "fleet",
        "S1 S4 S5 S6",
        "start / idle / stop the fleet",
        lambda b, cls: b.fleet(cls, b.p.fleet, b.p.cpu_window),
        MAIN_SYSTEMS,
    ),
    Scenario("flood", "S2", "output throughput", Bench.flood, MAIN_SYSTEMS),
    Scenario("paced", "S10", "paced line-at-a-time output (issue 10)",
             lambda b, cls: b.paced(cls, "paced", b.p.paced_bots, b.p.paced_interval,
                                    b.p.paced_seconds),
             MAIN_SYSTEMS),
    Scenario("logging", "S11", "one bot logging 1,000 lines/s (issue 10)",
             lambda b, cls: b.paced(cls, "logbot", 1, b.p.logging_interval, b.p.logging_seconds),
             MAIN_SYSTEMS),
    Scenario("crash", "S3", "crash-restart loop", Bench.crash_loop, MAIN_SYSTEMS),
    Scenario("stop_ignore", "S6b", "stop bots that ignore SIGTERM", Bench.stop_ignoring_term,
             MAIN_SYSTEMS),
    Scenario("restart", "S7", "restart one bot", Bench.restart,
             (TrioOrch, TrioOrchFile, Supervisord, Circus, Honcho, Direct)),
    Scenario("grandchild", "S8", "grandchild after stop", Bench.grandchild,
             (TrioOrch, Supervisord, SupervisordDefaults, Circus, Honcho, Direct)),
    Scenario(
        "fleet_big",
        "S9",
        "the big fleet",
        lambda b, cls: b.fleet(cls, b.p.big_fleet, b.p.big_cpu_window),
        MAIN_SYSTEMS,
    ),
)  # fmt: skip


# --------------------------------------------------------------------------- results and table


@dataclass(frozen=True)
class Row:
    label: str
    scenario: str
    metric: str
    better: str | None = "low"  # "low", "high" or None (no ratio)
    columns: tuple[tuple[str, str], ...] = ()  # column -> variant system shown in it


COLUMNS = ("trio-orch", "supervisord", "circus", "honcho", "direct")
OTHERS = ("supervisord", "circus", "honcho")


def table_rows(p: Params) -> list[Row]:
    rows = [
        Row(f"S1 start {p.fleet} bots [s]", "fleet", "start_s"),
        Row(f"S2 {p.flood_bots}x{p.flood_lines} lines: lines/s", "flood", "lines_per_s", "high"),
        Row("S2 manager CPU [us/line]", "flood", "cpu_us_per_line"),
        Row("S2 lost+garbled+reordered", "flood", "defects", None),
        Row(f"S10 {p.paced_bots} bots x {1 / p.paced_interval:g} lines/s: CPU [% core]", "paced",
            "cpu_percent"),
        Row("S10 manager CPU [us/line]", "paced", "us_per_line"),
        Row("S10 manager reads per line", "paced", "reads_per_line"),
        Row("S10 lost+garbled+reordered", "paced", "defects", None),
        Row(f"S11 logging {1 / p.logging_interval:g} lines/s: CPU [% core]", "logging",
            "cpu_percent"),
        Row("S11 manager CPU [us/line]", "logging", "us_per_line"),
        Row("S11 lost+garbled+reordered", "logging", "defects", None),
        Row("S3 crash-restart gap [ms]", "crash", "gap_ms"),
        Row(f"S4 idle CPU, {p.fleet} bots [% core]", "fleet", "cpu_pct"),
        Row(f"S5 manager RSS, {p.fleet} bots [MiB]", "fleet", "rss_mib"),
        Row(f"S5 manager PSS, {p.fleet} bots [MiB]", "fleet", "pss_mib"),
        Row("S6 stop all [s]", "fleet", "stop_s"),
        Row(f"S6b stop, TERM ignored, {p.stop_timeout:g} s timeout [s]", "stop_ignore", "stop_s"),
        Row("S7 restart NAME -> new pid up [ms]", "restart", "latency_ms"),
        Row("S7 via command file (trio) [ms]", "restart", "latency_ms", None,
            (("trio-orch", "trio-orch (cmd file)"),)),
        Row("S7 via command file (trio), mean [ms]", "restart", "latency_mean_ms", None,
            (("trio-orch", "trio-orch (cmd file)"),)),
        Row("S8 grandchild alive after bot stop", "grandchild", "alive_after_bot_stop", None),
        Row("S8 ... after manager stop", "grandchild", "alive_after_manager_stop", None),
        Row("S8 supervisord defaults: after bot stop", "grandchild", "alive_after_bot_stop", None,
            (("supervisord", "supervisord (defaults)"),)),
    ]  # fmt: skip
    if p.big_fleet:
        rows += [
            Row(f"S9 start {p.big_fleet} bots [s]", "fleet_big", "start_s"),
            Row(f"S9 manager RSS, {p.big_fleet} bots [MiB]", "fleet_big", "rss_mib"),
            Row(f"S9 growth per bot {p.fleet}->{p.big_fleet} [KiB]", "fleet_big", "kib_per_bot"),
            Row(f"S9 idle CPU, {p.big_fleet} bots [% core]", "fleet_big", "cpu_pct"),
            Row(f"S9 stop {p.big_fleet} bots [s]", "fleet_big", "stop_s"),
        ]
    return rows


def median_of(runs: list[dict]) -> dict:
    """Median of every numeric metric over the successful runs; booleans: True if any run."""
    merged: dict = {}
    for key in {k for r in runs for k in r}:
        values = [r[key] for r in runs if key in r]
        if all(isinstance(v, bool) for v in values):
            merged[key] = any(values)
        elif all(isinstance(v, int | float) for v in values):
            merged[key] = statistics.median(values)
        else:
            merged[key] = values[0]
    return merged


def add_growth_per_bot(results: dict, p: Params) -> None:
    """S9: (RSS with the big fleet - RSS with the normal fleet) / extra bots."""
    for name, entry in results.get("fleet_big", {}).items():
        small = results.get("fleet", {}).get(name, {}).get("median", {})
        big = entry.get("median", {})
        if "rss_mib" in small and "rss_mib" in big:
            growth = (big["rss_mib"] - small["rss_mib"]) * 1024 / (p.big_fleet - p.fleet)
            big["kib_per_bot"] = growth


def cell(results: dict, row: Row, column: str):
    """(value or None, text) for one table cell."""
    system = dict(row.columns).get(column, column if not row.columns else None)
    if system is None:
        return None, ""
    entry = results.get(row.scenario, {}).get(system)
    if entry is None:
        return None, "-"
    if "na" in entry:
        return None, "n/a"
    value = entry.get("median", {}).get(row.metric)
    if value is None:
        return None, "err" if entry.get("errors") else "n/a"
    if isinstance(value, bool):
        return value, "ALIVE" if value else "killed"
    return value, fmt(value)


def fmt(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def ratio_cells(results: dict, row: Row) -> tuple[str, str]:
    """trio-orch / best other system, trio-orch / direct."""
    trio, _ = cell(results, row, "trio-orch")
    if row.better is None or not isinstance(trio, int | float) or isinstance(trio, bool):
        return "", ""
    others = [v for c in OTHERS if isinstance(v := cell(results, row, c)[0], int | float)]
    best = (min if row.better == "low" else max)(others) if others else None
    direct, _ = cell(results, row, "direct")
    vs_best = f"{trio / best:.2f}x" if best else ""
    vs_direct = f"{trio / direct:.2f}x" if isinstance(direct, int | float) and direct else ""
    return vs_best, vs_direct


def render_table(results: dict, p: Params) -> tuple[str, list[dict]]:
    header = ["scenario (median)", *COLUMNS, "trio/best", "trio/direct"]
    table, records = [header], []
    for row in table_rows(p):
        cells = [cell(results, row, c) for c in COLUMNS]
        ratios = ratio_cells(results, row)
        table.append([row.label, *(text for _, text in cells), *ratios])
        records.append(
            {"row": row.label, **{c: v for c, (v, _) in zip(COLUMNS, cells, strict=True)},
             "trio_vs_best_other": ratios[0], "trio_vs_direct": ratios[1]}
        )  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))).rstrip() for r in table]  # fmt: skip
    lines.insert(1, "-" * max(map(len, lines)))
    return "\n".join(lines), records


def notes(results: dict) -> list[str]:
    """n/a reasons and errors, one line each."""
    out = []
    for scenario, systems in results.items():
        for name, entry in systems.items():
            if "na" in entry:
                out.append(f"{scenario} {name}: n/a: {entry['na']}")
            for error in entry.get("errors", []):
                out.append(f"{scenario} {name}: error: {error.splitlines()[0][:300]}")
    return out


# --------------------------------------------------------------------------- setup


def ensure_other_systems() -> str | None:
    """Create benchmarks/.venv with supervisor, circus and honcho; None or why not."""
    if all((VENV_BIN / exe).exists() for exe in ("supervisord", "circusd", "honcho")):
        return None
    print(f"installing {', '.join(OTHER_PACKAGES)} into {VENV_BIN.parent} ...", flush=True)
    try:
        if not (VENV_BIN / "python").exists():
            subprocess.run([PY, "-m", "venv", str(VENV_BIN.parent)], check=True, timeout=300)
        pip = [str(VENV_BIN / "python"), "-m", "pip", "install", "-q", *OTHER_PACKAGES]
        subprocess.run(pip, check=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"could not install {OTHER_PACKAGES} into {VENV_BIN.parent}: {exc}"
    return None


def trio_orch_problem() -> str | None:
    """None when `python -m trio_orchestrator --help` works from this interpreter."""
    try:
        if importlib.util.find_spec("trio_orchestrator") is None:
            return "import trio_orchestrator fails (install the project into this environment)"
        if importlib.util.find_spec("trio_orchestrator.cli") is None:
            return "trio_orchestrator/cli.py is missing (the CLI is not written yet)"
    except ImportError as exc:
        return f"import trio_orchestrator fails: {exc}"
    probe = subprocess.run(
        [PY, "-m", "trio_orchestrator", "--help"],
        check=False,
        capture_output=True,
        timeout=60,
        cwd=tempfile.gettempdir(),
    )
    if probe.returncode != 0:
        return f"python -m trio_orchestrator --help fails: {probe.stderr.decode()[-300:]}"
    return None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    with contextlib.suppress(Exception):
        git = ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"]
        found["repo"] = subprocess.run(git, check=False, capture_output=True, text=True).stdout
        found["repo"] = found["repo"].strip()
    with contextlib.suppress(Exception):
        found["trio-orch"] = importlib.metadata.version("trio-orch")
    for exe in ("supervisord", "circusd", "honcho"):
        with contextlib.suppress(Exception):
            argv = [str(VENV_BIN / exe), "--version"]
            done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
            found[exe] = done.stdout.strip()
    return found


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small fleets, 1 run (< 1 min)")
    parser.add_argument("--runs", type=int, help="runs per scenario (default 3, quick 1)")
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="output file")
    parser.add_argument("--only", help="comma-separated scenario ids, e.g. S1,S7 (default all)")
    parser.add_argument("--systems", help="comma-separated system names (default all)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir for inspection")
    parser.add_argument(
        "--trio-orch-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra global_settings for trio-orch, VALUE as JSON or text "
        "(e.g. metrics_listen=127.0.0.1:0)",
    )
    parser.add_argument("--render", type=Path, help="only print the table of a results file")
    return parser.parse_args(argv)


def selected(args: argparse.Namespace, p: Params) -> list[Scenario]:
    wanted = set(args.only.upper().split(",")) if args.only else None
    chosen = []
    for scenario in SCENARIOS:
        if scenario.key == "fleet_big" and not p.big_fleet:
            continue
        if wanted is None or wanted & set(scenario.ids.upper().split()):
            chosen.append(scenario)
    return chosen


def unavailable(args: argparse.Namespace) -> dict[str, str]:
    """System name -> reason it is skipped altogether."""
    skip = {}
    if args.systems:
        keep = {s.strip() for s in args.systems.split(",")}
        for cls in {*MAIN_SYSTEMS, TrioOrchFile, SupervisordDefaults}:
            if cls.name not in keep and cls.name.split(" ")[0] not in keep:
                skip[cls.name] = "not selected (--systems)"
    if problem := ensure_other_systems():
        for cls in (Supervisord, SupervisordDefaults, Circus, Honcho):
            skip.setdefault(cls.name, problem)
    if problem := trio_orch_problem():
        print(f"SKIPPING trio-orch: {problem}", flush=True)
        for cls in (TrioOrch, TrioOrchFile):
            skip.setdefault(cls.name, problem)
    return skip


def run_all(args: argparse.Namespace, p: Params, bench: Bench, report: dict) -> None:
    skip = unavailable(args)
    results = report["results"]
    for scenario in selected(args, p):
        print(f"== {scenario.ids}: {scenario.title}", flush=True)
        entries = results.setdefault(scenario.key, {})
        for cls in scenario.systems:
            entry = entries.setdefault(cls.name, {"runs": [], "errors": []})
            # a scenario measuring several ids runs unless the system can do none of them
            reasons = [cls.cannot[i] for i in scenario.ids.split() if i in cls.cannot]
            if cls.name in skip:
                entry["na"] = skip[cls.name]
            elif reasons and len(reasons) == len(scenario.ids.split()):
                entry["na"] = reasons[0]
        for run in range(p.runs):  # systems interleaved, so that drifting load hits all alike
            for cls in scenario.systems:
                entry = entries[cls.name]
                if "na" in entry:
                    continue
                started = time.monotonic()
                print(
                    f"{scenario.ids:12} {cls.name:24} run {run + 1}/{p.runs} ...",
                    end="",
                    flush=True,
                )
                try:
                    figures = scenario.run(bench, cls)
                    entry["runs"].append(figures)
                    shown = {
                        k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()
                    }
                    print(f" {time.monotonic() - started:5.1f}s {shown}", flush=True)
                except NotApplicable as exc:
                    entry["na"] = str(exc)
                    print(f" n/a: {exc}", flush=True)
                except Exception as exc:
                    entry["errors"].append(f"{type(exc).__name__}: {exc}")
                    print(f" ERROR {type(exc).__name__}: {exc}", flush=True)
                entry["median"] = median_of(entry["runs"])
        add_growth_per_bot(results, p)
        write_report(args.json, report, p)


def write_report(path: Path, report: dict, p: Params) -> None:
    report["table"] = render_table(report["results"], p)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for item in args.trio_orch_setting:
        key, _, value = item.partition("=")
        try:
            TRIO_ORCH_EXTRA_SETTINGS[key] = json.loads(value)
        except ValueError:
            TRIO_ORCH_EXTRA_SETTINGS[key] = value
    if args.render:
        report = json.loads(args.render.read_text())
        print(render_table(report["results"], Params(**report["meta"]["params"]))[0])
        return 0
    p = QUICK if args.quick else Params()
    if args.runs:
        p = Params(**{**asdict(p), "runs": args.runs})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    base = Path(tempfile.mkdtemp(prefix=f"{TOKEN}-"))
    report = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "quick": args.quick,
            "params": asdict(p),
            "versions": versions(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "manager_cpu": "utime+stime of the manager process (and its non-bot descendants); "
            "bots and other children excluded; S4 from schedstat (ns), ticks alongside",
        },
        "results": {},
    }
    try:
        run_all(args, p, Bench(p, base, args.keep), report)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", flush=True)
        return 130
    finally:
        leftovers = kill_matching(TOKEN)
        if leftovers:
            print(f"killed {leftovers} leftover processes", flush=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        report["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        write_report(args.json, report, p)
    text, _ = render_table(report["results"], p)
    print("\n" + text + "\n")
    for line in notes(report["results"]):
        print(line)
    print(f"\nfigures of every run: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
