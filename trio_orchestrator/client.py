"""The control protocol and its synchronous client.

Kept free of trio, attrs and YAML so that ``trio-orch stop X`` starts fast: the CLI imports
this module and the standard library only. The protocol is one JSON object per line over a
Unix socket: the client sends ``{"command": "restart", "name": "X"}`` and the manager
answers ``{"ok": true, "code": 0, "message": "...", ...}`` and closes the connection.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from trio_orchestrator.errors import ManagerNotRunning, OrchestratorError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["MAX_REPLY_BYTES", "MAX_REQUEST_BYTES", "encode", "request", "socket_address"]

MAX_REQUEST_BYTES = 64 * 1024
MAX_REPLY_BYTES = 64 * 1024 * 1024
# Generous: a restart waits for the bot's stop_timeout and a git update.
DEFAULT_TIMEOUT = 600.0


# sun_path holds 108 bytes; deeper paths are reached through the directory's fd.
MAX_SOCKET_PATH = 100


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """A path to bind or connect to *path*, however long *path* is.

    A long path is reached as ``/proc/self/fd/N/NAME`` through an open descriptor of its
    directory, valid until the context exits.
    """
    text = os.fspath(path)
    if len(text.encode()) <= MAX_SOCKET_PATH:
        yield text
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield text  # the connect or bind will report the problem
        return
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _connect(sock: socket.socket, socket_path: str, deadline: float) -> None:
    """Connect, waiting while the manager's accept queue is full.

    A Unix socket with a timeout connects without blocking: a full accept queue (a burst
    of clients) answers EAGAIN at once rather than waiting, so we wait and try again.
    """
    delay = 0.005
    while True:
        try:
            sock.connect(socket_path)
            return
        except BlockingIOError:
            if time.monotonic() + delay > deadline:
                raise OrchestratorError(
                    f"the manager at {socket_path} is too busy to accept a connection"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                raise ManagerNotRunning(socket_path) from None
            raise OrchestratorError(f"cannot reach the manager at {socket_path}: {exc}") from None


def request(socket_path: str, message: dict[str, Any], timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Send one request to the manager and return its reply.

    Raises:
        ManagerNotRunning: nothing listens on *socket_path*.
        OrchestratorError: the manager closed the connection or answered garbage.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        _connect(sock, socket_path, time.monotonic() + timeout)
        chunks = []
        size = 0
        try:
            # Refused before we finished (too large)? Its reply is still there to read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(encode(message))
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if chunk.endswith(b"\n") or size > MAX_REPLY_BYTES:
                    break
        except TimeoutError:
            raise OrchestratorError(f"the manager did not answer within {timeout:g}s") from None
        except OSError as exc:
            raise OrchestratorError(f"lost the connection to the manager: {exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise OrchestratorError("the manager closed the connection without a valid reply") from None
    if not isinstance(reply, dict):
        raise OrchestratorError("the manager sent an invalid reply")
    return reply
