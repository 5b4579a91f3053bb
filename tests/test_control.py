"""The control socket (SPEC 6.1): server, protocol and synchronous client.

Real Unix sockets in a temporary directory, the real clock with ``trio.fail_after``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from functools import partial

import pytest
import trio
from helpers import until

from trio_orchestrator.client import (
    MAX_REQUEST_BYTES,
    MAX_SOCKET_PATH,
    encode,
    request,
    socket_address,
)
from trio_orchestrator.commands import Action, BadCommand, Command
from trio_orchestrator.control import (
    REQUEST_TIMEOUT,
    bind_control_socket,
    parse_request,
    serve_control,
)
from trio_orchestrator.errors import (
    EXIT_USAGE,
    ManagerNotRunning,
    ManagerRunning,
    OrchestratorError,
)


class Handler:
    """Answers every command with its text, after an optional delay."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.commands: list[Command] = []

    async def __call__(self, command: Command) -> dict:
        self.commands.append(command)
        await trio.sleep(self.delay)
        return {"ok": True, "code": 0, "message": str(command)}


@pytest.fixture
def socket_path(tmp_path):
    return tmp_path / ".trio-orch.sock"


@pytest.fixture
def request_timeout():
    """The server's request timeout; a test overrides it with
    ``@pytest.mark.parametrize("request_timeout", [seconds])``."""
    return REQUEST_TIMEOUT


@pytest.fixture
async def server(socket_path, request_timeout):
    """A control server on *socket_path*; yields its handler."""
    handler = Handler()
    listener = await bind_control_socket(socket_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(serve_control, listener, handler, request_timeout=request_timeout)
        )
        yield handler
        nursery.cancel_scope.cancel()


async def raw_exchange(path, data: bytes, *, close_write: bool = False) -> bytes:
    """Send *data* and read until the server closes the connection."""
    with socket_address(path) as address:
        stream = await trio.open_unix_socket(address)
    async with stream:
        if data:
            await stream.send_all(data)
        if close_write:
            await stream.send_eof()
        received = b""
        while chunk := await stream.receive_some():
            received += chunk
        return received


async def ask(path, message: dict) -> dict:
    return json.loads(await raw_exchange(path, encode(message)))


def connection_tasks() -> int:
    """Connection handler tasks alive anywhere in this run (no stuck tasks)."""
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task.name.endswith("_run_handler"):  # serve_listeners' per-connection task
            count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


async def no_connection_tasks_left() -> None:
    with trio.fail_after(2):
        await until(lambda: not connection_tasks())


# ----- binding -----


async def test_socket_is_created_with_mode_0600(socket_path):
    listener = await bind_control_socket(socket_path)
    async with listener:
        info = os.lstat(socket_path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600


async def test_umask_is_restored(socket_path):
    before = os.umask(0o022)
    os.umask(before)
    listener = await bind_control_socket(socket_path)
    await listener.aclose()
    after = os.umask(before)
    assert after == before


async def test_stale_socket_file_left_by_a_dead_manager_is_replaced(socket_path):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(socket_path))
    dead.close()  # the file stays, nobody listens: a SIGKILLed manager's socket
    handler = Handler()
    listener = await bind_control_socket(socket_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, listener, handler)
        reply = await ask(socket_path, {"command": "status", "name": "A"})
        nursery.cancel_scope.cancel()
    assert reply["message"] == "status A"
    assert stat.S_IMODE(os.lstat(socket_path).st_mode) == 0o600


async def test_live_socket_is_never_stolen(socket_path, server):
    inode = os.lstat(socket_path).st_ino
    with pytest.raises(ManagerRunning):
        await bind_control_socket(socket_path)
    assert os.lstat(socket_path).st_ino == inode
    reply = await ask(socket_path, {"command": "status", "name": "A"})
    assert reply == {"ok": True, "code": 0, "message": "status A"}


async def test_listening_socket_without_server_loop_is_live_too(socket_path):
    first = await bind_control_socket(socket_path)
    async with first:
        with pytest.raises(ManagerRunning):
            await bind_control_socket(socket_path)


async def test_something_else_at_the_path_is_left_alone(socket_path):
    socket_path.write_text("precious")
    with pytest.raises(OrchestratorError, match="not a socket"):
        await bind_control_socket(socket_path)
    assert socket_path.read_text() == "precious"


async def test_unusable_directory_is_one_clear_error(tmp_path):
    with pytest.raises(OrchestratorError, match="cannot create the control socket"):
        await bind_control_socket(tmp_path / "missing" / "sock")


async def test_long_socket_path(tmp_path):
    directory = tmp_path / ("d" * 60) / ("e" * 60)
    directory.mkdir(parents=True)
    path = directory / ".trio-orch.sock"
    assert len(os.fsencode(path)) > 108
    handler = Handler()
    listener = await bind_control_socket(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, listener, handler)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        reply = await trio.to_thread.run_sync(_sync_request, path, {"command": "list"})
        assert reply["message"] == "list"
        with pytest.raises(ManagerRunning):
            await bind_control_socket(path)
        nursery.cancel_scope.cancel()


def _sync_request(path, message, timeout=10.0):
    with socket_address(path) as address:
        return request(address, message, timeout)


def test_socket_address_short_and_long(tmp_path):
    short = tmp_path / "s"
    with socket_address(short) as address:
        assert address == str(short)
    deep = tmp_path / ("x" * MAX_SOCKET_PATH) / "sock"
    deep.parent.mkdir()
    with socket_address(deep) as address:
        assert address.startswith("/proc/self/fd/")
        assert address.endswith("/sock")
        fd = int(address.split("/")[4])
        assert os.path.samefile(f"/proc/self/fd/{fd}", deep.parent)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed again


# ----- protocol -----


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"command": "restart", "name": "A"}, Command(Action.RESTART, "A")),
        ({"command": "list"}, Command(Action.LIST)),
        ({"command": "status_all", "name": "ignored"}, Command(Action.STATUS_ALL)),
        ({"command": "status", "name": "A", "extra": 1}, Command(Action.STATUS, "A")),
    ],
)
def test_parse_request(message, expected):
    assert parse_request(json.dumps(message).encode()) == expected


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "object"),
        (b'{"name": "A"}', "object"),
        (b'{"command": 3}', "object"),
        (b'{"command": "explode", "name": "A"}', "unknown command"),
        (b'{"command": "start_all"}', "unknown command"),
        (b'{"command": "stop"}', "needs a bot name"),
        (b'{"command": "stop", "name": 7}', "must be a list of strings"),
        (b'{"command": "stop", "names": []}', "needs a bot name"),
    ],
)
def test_parse_request_rejects(data, match):
    with pytest.raises(BadCommand, match=match):
        parse_request(data)


async def test_request_and_reply(socket_path, server):
    reply = await ask(socket_path, {"command": "restart", "name": "A"})
    assert reply == {"ok": True, "code": 0, "message": "restart A"}
    assert server.commands == [Command(Action.RESTART, "A")]


@pytest.mark.parametrize(
    "data",
    [b"{not json\n", b"[]\n", b'{"command": "explode"}\n', b"\xff\xfe\n", b"\n"],
)
async def test_malformed_request_gets_an_error_reply(socket_path, server, data):
    reply = json.loads(await raw_exchange(socket_path, data))
    assert reply["ok"] is False
    assert reply["code"] == EXIT_USAGE
    assert server.commands == []


async def test_oversized_request_gets_an_error_reply(socket_path, server):
    with trio.fail_after(10):
        raw = await raw_exchange(socket_path, b"x" * (MAX_REQUEST_BYTES + 10))
    reply = json.loads(raw)
    assert reply["ok"] is False
    assert "larger than" in reply["message"]
    assert server.commands == []


async def test_client_disconnecting_mid_request(socket_path, server):
    with trio.fail_after(10):
        for _ in range(20):
            with socket_address(socket_path) as address:
                stream = await trio.open_unix_socket(address)
            await stream.send_all(b'{"command": "sto')
            await stream.aclose()
        # The server is unharmed and nothing lingers.
        assert (await ask(socket_path, {"command": "list"}))["ok"] is True
    await no_connection_tasks_left()
    assert server.commands == [Command(Action.LIST)]


async def test_request_without_newline_then_eof_is_still_answered(socket_path, server):
    raw = await raw_exchange(socket_path, b'{"command": "list"}', close_write=True)
    assert json.loads(raw)["message"] == "list"


@pytest.mark.parametrize("request_timeout", [0.3])
async def test_silent_client_times_out(socket_path, server):
    with trio.fail_after(5):
        start = trio.current_time()
        raw = await raw_exchange(socket_path, b'{"command": "list"')  # never a newline
        elapsed = trio.current_time() - start
    reply = json.loads(raw)
    assert reply["ok"] is False
    assert "no complete request" in reply["message"]
    assert 0.25 <= elapsed < 3
    await no_connection_tasks_left()
    assert server.commands == []


@pytest.mark.parametrize("request_timeout", [30.0])
async def test_silent_client_does_not_block_others(socket_path, server):
    with socket_address(socket_path) as address:
        silent = await trio.open_unix_socket(address)
    async with silent:
        # Well within the silent client's timeout, with room for a loaded machine.
        with trio.fail_after(10):
            reply = await ask(socket_path, {"command": "status", "name": "A"})
        assert reply["ok"] is True
        with trio.fail_after(10):  # only the silent one stays, waiting for its timeout
            await until(lambda: connection_tasks() == 1)


async def test_hundred_concurrent_clients_all_answered(socket_path, server):
    server.delay = 0.2  # every request is in flight at the same time
    replies: dict[int, dict] = {}

    async def client(i: int) -> None:
        replies[i] = await ask(socket_path, {"command": "restart", "name": f"B{i}"})

    with trio.fail_after(10):
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(client, i)
        elapsed = trio.current_time() - start
    assert sorted(replies) == list(range(100))
    assert all(replies[i]["message"] == f"restart B{i}" for i in range(100))
    assert elapsed < 5, "requests were served one after another"
    await no_connection_tasks_left()


async def test_hundred_concurrent_sync_clients(socket_path, server):
    """The CLI's own client, from 100 threads at once."""
    server.delay = 0.1
    results: list[dict] = []
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            results.append(_sync_request(socket_path, {"command": "stop", "name": f"B{i}"}))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def run_all() -> None:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    with trio.fail_after(20):
        await trio.to_thread.run_sync(run_all)
    assert errors == []
    assert sorted(r["message"] for r in results) == sorted(f"stop B{i}" for i in range(100))


# ----- the synchronous client -----


def test_client_no_socket_means_no_manager(socket_path):
    with pytest.raises(ManagerNotRunning):
        _sync_request(socket_path, {"command": "list"})


def test_client_stale_socket_means_no_manager(socket_path):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(socket_path))
    dead.close()
    with pytest.raises(ManagerNotRunning):
        _sync_request(socket_path, {"command": "list"})


def test_client_regular_file_means_no_manager(socket_path):
    socket_path.write_text("")
    with pytest.raises(ManagerNotRunning):
        _sync_request(socket_path, {"command": "list"})


async def test_client_huge_request_gets_the_error_reply(socket_path, server):
    message = {"command": "stop", "name": "x" * (4 * 1024 * 1024)}
    with trio.fail_after(10):
        reply = await trio.to_thread.run_sync(_sync_request, socket_path, message)
    assert reply["ok"] is False
    assert "larger than" in reply["message"]


class FakeManager:
    """A server thread that answers every connection with *answer* (or nothing)."""

    def __init__(self, path, answer: bytes | None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.answer = answer
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        connection, _ = self.sock.accept()
        with connection:
            connection.recv(65536)
            if self.answer is None:
                connection.recv(1)  # hold the connection until the client gives up
            else:
                connection.sendall(self.answer)

    def close(self) -> None:
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"", "without a valid reply"),
        (b"garbage\n", "without a valid reply"),
        (b'{"ok": tr', "without a valid reply"),
        (b"[1]\n", "invalid reply"),
    ],
)
def test_client_bad_replies(socket_path, answer, match):
    fake = FakeManager(socket_path, answer)
    try:
        with pytest.raises(OrchestratorError, match=match):
            _sync_request(socket_path, {"command": "list"})
    finally:
        fake.close()


def test_client_times_out(socket_path):
    fake = FakeManager(socket_path, None)
    try:
        with pytest.raises(OrchestratorError, match=r"did not answer within 0\.3s"):
            _sync_request(socket_path, {"command": "list"}, timeout=0.3)
    finally:
        fake.close()
