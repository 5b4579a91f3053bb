"""The manager's control socket: a Unix socket speaking the JSON-lines protocol of
:mod:`trio_orchestrator.client`.

Each connection carries one request. A client that sends garbage, too much, or nothing
gets an error reply (or is dropped after :data:`REQUEST_TIMEOUT`); it never disturbs the
manager or other clients.

:class:`ControlSocket` keeps the socket at its path: a socket removed (``rm``, a cleanup of
``/tmp``) or replaced by another file is noticed within :data:`SOCKET_CHECK_SECONDS` and
bound again, unless another live process answers there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket as stdlib_socket
import stat
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trio_orchestrator.client import MAX_REQUEST_BYTES, encode, socket_address
from trio_orchestrator.commands import Action, BadCommand, Command
from trio_orchestrator.errors import EXIT_USAGE, ManagerRunning, OrchestratorError
from trio_orchestrator.fileid import path_identity

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from trio_orchestrator.fileid import FileIdentity

__all__ = ["REQUEST_TIMEOUT", "ControlSocket", "bind_control_socket", "serve_control"]

LOGGER = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
REPLY_TIMEOUT = 10.0
MAX_CONCURRENT_CLIENTS = 256
# How often the socket's path is checked for removal or replacement.
SOCKET_CHECK_SECONDS = 2.0


def _error(message: str, code: int = EXIT_USAGE) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}


def parse_request(data: bytes) -> Command:
    """Parse ``{"command": ..., "name": ...}`` or ``{"command": ..., "names": [...]}``,
    with an optional ``"lines"`` (or ``"limit"``) count for queries such as history.

    Raises: BadCommand for anything else.
    """
    try:
        message = json.loads(data)
    except ValueError:
        raise BadCommand("request is not valid JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("command"), str):
        raise BadCommand('request must be an object with a "command" string')
    try:
        action = Action(message["command"])
    except ValueError:
        raise BadCommand(f"unknown command {message['command']!r}") from None
    names = message.get("names", [message["name"]] if "name" in message else [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise BadCommand('"names" must be a list of strings')
    command = Command.build(action, names)
    limit = message.get("lines", message.get("limit"))
    if limit is None:
        return command
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise BadCommand('"lines" must be a whole number >= 0')
    return attrs.evolve(command, limit=limit)


def _socket_exists(path: Path) -> bool:
    """Raises: OrchestratorError if something other than a socket is at *path*."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise OrchestratorError(
            f"{path} exists and is not a socket; move it away or choose another path with --socket"
        )
    return True


async def bind_control_socket(path: Path) -> trio.SocketListener:
    """Bind *path* with mode 0600, replacing a stale socket but never a live one.

    Raises:
        ManagerRunning: another process answers on *path*.
        OrchestratorError: something that is not a socket is at *path*, or the socket
            cannot be created.
    """
    try:
        with socket_address(path) as address:
            if _socket_exists(path):
                probe = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
                with probe:
                    try:
                        await probe.connect(address)
                    except OSError as exc:
                        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                            raise
                    else:
                        raise ManagerRunning(path, None)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # stale: its manager is gone
        # Bound under a temporary name and renamed into place once listening: a client
        # that sees the path can connect (no window between bind() and listen()).
        staging = path.with_name(f"{path.name}.{os.getpid()}.new")
        with socket_address(staging) as address:
            sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
            # The umask makes the socket 0600 from its creation: no window in which another
            # user could connect. The chmod is belt and braces.
            old_umask = os.umask(0o177)
            try:
                await sock.bind(address)
            except OSError:
                sock.close()
                raise
            finally:
                os.umask(old_umask)
        try:
            os.chmod(staging, 0o600)
            sock.listen(128)
            os.replace(staging, path)
        except OSError:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise
    except OSError as exc:
        raise OrchestratorError(
            f"cannot create the control socket {path}: {exc.strerror or exc}"
        ) from None
    return trio.SocketListener(sock)


async def serve_control(
    listener: trio.SocketListener,
    handler: Callable[[Command], Awaitable[dict[str, Any]]],
    *,
    request_timeout: float = REQUEST_TIMEOUT,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer requests on *listener* with *handler* until cancelled.

    A client that sends no complete request within *request_timeout* seconds gets an
    error reply. Requests run in *handler_nursery* if given (they then outlive this task).

    **Cancellation:** closes the listener; requests in progress are cancelled unless
    they run in a *handler_nursery*.
    """
    limiter = trio.CapacityLimiter(MAX_CONCURRENT_CLIENTS)

    async def serve_one(stream: trio.SocketStream) -> None:
        async with limiter, stream:
            reply = await _answer(stream, handler, request_timeout)
            with trio.move_on_after(REPLY_TIMEOUT):
                # The client went away? Its loss.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(encode(reply))

    await trio.serve_listeners(
        serve_one, [listener], handler_nursery=handler_nursery, task_status=task_status
    )


def _socket_identity(path: Path) -> FileIdentity | None:
    # The file at the path itself: a link somebody put there is not our socket.
    return path_identity(path, follow_symlinks=False)


@attrs.define(eq=False)
class ControlSocket:
    """The control socket at *path*, re-created if it is removed or replaced.

    Build it with :meth:`bind` before any nursery opens (start-up errors stay plain).
    """

    path: Path
    _listener: trio.SocketListener
    _bound: FileIdentity | None  # the identity of the socket file we bound
    check_interval: float = SOCKET_CHECK_SECONDS
    _warned: str | None = None

    @classmethod
    async def bind(cls, path: Path) -> ControlSocket:
        """Raises: as :func:`bind_control_socket`."""
        listener = await bind_control_socket(path)
        return cls(path, listener, _socket_identity(path))

    async def serve(
        self,
        handler: Callable[[Command], Awaitable[dict[str, Any]]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer requests with *handler*, and watch the path, until cancelled.

        A re-created socket is served in place of the old one; requests in progress on
        the old one finish.

        **Cancellation:** closes the listener; requests in progress are cancelled.
        """
        async with trio.open_nursery() as nursery:
            accepting = await self._accept(nursery, handler)
            task_status.started()
            while True:
                await trio.sleep(self.check_interval)
                if await trio.to_thread.run_sync(_socket_identity, self.path) == self._bound:
                    continue
                try:
                    listener = await bind_control_socket(self.path)
                except ManagerRunning:
                    self._warn("another process is answering there; leaving it alone")
                    continue
                except OrchestratorError as exc:
                    self._warn(str(exc))
                    continue
                self._warned = None
                self._bound = _socket_identity(self.path)
                accepting.cancel()  # closes the old listener; its requests go on
                self._listener = listener
                accepting = await self._accept(nursery, handler)
                LOGGER.warning(
                    "control socket %s was removed or replaced: control socket re-created",
                    self.path,
                )

    async def _accept(
        self, nursery: trio.Nursery, handler: Callable[[Command], Awaitable[dict[str, Any]]]
    ) -> trio.CancelScope:
        scope = trio.CancelScope()

        async def accept(*, task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await serve_control(
                    self._listener, handler, handler_nursery=nursery, task_status=task_status
                )

        await nursery.start(accept)
        return scope

    def _warn(self, problem: str) -> None:
        if problem != self._warned:  # once, not every check
            LOGGER.warning(
                "control socket %s is gone or replaced and cannot be re-created: %s",
                self.path,
                problem,
            )
            self._warned = problem

    def unlink(self) -> None:
        """Remove the socket file, if it is still ours."""
        if _socket_identity(self.path) == self._bound:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


async def _answer(
    stream: trio.SocketStream,
    handler: Callable[[Command], Awaitable[dict[str, Any]]],
    request_timeout: float,
) -> dict[str, Any]:
    data = b""
    with trio.move_on_after(request_timeout) as timeout:
        try:
            while b"\n" not in data:
                chunk = await stream.receive_some(MAX_REQUEST_BYTES)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_REQUEST_BYTES:
                    return _error(f"request larger than {MAX_REQUEST_BYTES} bytes")
        except trio.BrokenResourceError:
            return _error("connection broken")
    if timeout.cancelled_caught:
        return _error(f"no complete request within {request_timeout:g}s")
    try:
        command = parse_request(data.partition(b"\n")[0])
    except BadCommand as exc:
        return _error(str(exc))
    return await handler(command)
