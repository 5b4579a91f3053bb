"""The HTTP listener of ``metrics_listen``: ``/metrics``, the status page and its API.

HTTP/1.1 on trio with h11 (sans-io); imported only when ``metrics_listen`` is set, so a
manager without a listener never loads h11. Routes:

- ``GET /metrics``: the Prometheus text exposition (:mod:`trio_orchestrator.metrics`).
- ``GET /``: the status page (:mod:`trio_orchestrator.webpage`), no external assets.
- ``GET /api/bots``: the bots as ``list --json`` shows them, plus ``actions``.
- ``GET /events``: the same document as server-sent events, on every change.
- ``GET /api/logs/NAME?lines=N``: the last lines of ``<log_directory>/NAME.log``.
- ``POST /api/ACTION/NAME``: start, stop, restart, pause, resume.

Read-only without ``web_token``. With a token, the actions (and the logs) need the header
``Authorization: Bearer <token>``; anything else gets 403. The token is never accepted in
the URL. Connections are bounded like the control socket's: at most
:data:`MAX_CONCURRENT_CLIENTS`, each request complete within :data:`REQUEST_TIMEOUT`, each
write within :data:`SEND_TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import hmac
import http
import ipaddress
import json
import os
import socket
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

from trio_orchestrator.commands import Action, Command
from trio_orchestrator.errors import EXIT_OK, EXIT_USAGE, ConfigError, OrchestratorError
from trio_orchestrator.metrics import CONTENT_TYPE
from trio_orchestrator.webpage import PAGE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

__all__ = [
    "MAX_CONCURRENT_CLIENTS",
    "REQUEST_TIMEOUT",
    "WebApp",
    "bind_web",
    "check_listen",
    "parse_listen",
    "serve_web",
]


MAX_CONCURRENT_CLIENTS = 64
MAX_EVENT_STREAMS = 16  # of those, long-lived /events connections
REQUEST_TIMEOUT = 10.0  # to receive a whole request (head and body)
KEEPALIVE_TIMEOUT = 5.0  # idle time allowed between two requests on one connection
SEND_TIMEOUT = 10.0  # for each write to a client
MAX_HEAD_BYTES = 16 * 1024
RECEIVE_BYTES = 4096  # small reads: h11 checks MAX_HEAD_BYTES between them
LINGER_SECONDS = 0.5  # after an error answer, how long we read what the client still sends
LINGER_BYTES = 256 * 1024
MAX_BODY_BYTES = 4 * 1024
EVENT_HEARTBEAT_SECONDS = 15.0
EVENT_STREAM_SECONDS = 3600.0  # then the browser reconnects (EventSource does it itself)
EVENT_COALESCE_SECONDS = 0.05
MAX_LOG_LINES = 1000
LOG_TAIL_BYTES = 512 * 1024
WEB_ACTIONS = ("start", "stop", "restart", "pause", "resume")
_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        b"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
]


class WebApp(Protocol):
    """What the listener needs of the supervisor."""

    def all_info(self) -> list[dict[str, Any]]: ...
    async def look(self) -> None: ...
    async def metrics_text(self) -> str: ...
    async def execute(self, command: Command, source: str = ...) -> dict[str, Any]: ...
    def log_path(self, name: str) -> Path | None: ...
    def add_change_listener(self, listener: Callable[[], None]) -> None: ...


# ----- the address -----


def parse_listen(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; an empty host is 127.0.0.1.

    Raises:
        ValueError: not host:port, or a port outside 0-65535.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{address!r} is not host:port (e.g. 127.0.0.1:9464)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: write an IPv6 address in brackets, e.g. [::1]:9464")
    return host or "127.0.0.1", int(port_text)


_LISTEN_KEY = "global_settings.metrics_listen"


def _is_loopback(host: str) -> bool | None:
    """True/False for an IP address or "localhost"; None for a name we must resolve."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None


def check_listen(address: str, token: str | None, config_path: object) -> tuple[str, int]:
    """Validate ``metrics_listen`` before anything starts.

    Raises:
        ConfigError: not host:port, or not a loopback address while ``web_token`` is unset.
    """
    key = _LISTEN_KEY
    try:
        host, port = parse_listen(address)
    except ValueError as exc:
        raise ConfigError(config_path, str(exc), key=key) from None
    if token is None and _is_loopback(host) is False:
        raise ConfigError(config_path, _needs_token(address), key=key)
    return host, port


def _needs_token(address: str) -> str:
    return (
        f"{address} is not a loopback address; set global_settings.web_token to serve the "
        "status page beyond this machine, or listen on 127.0.0.1"
    )


async def bind_web(address: str, token: str | None, config_path: object) -> list[Any]:
    """Check *address* and bind it (before any nursery opens, like the control socket).

    Raises:
        ConfigError: see :func:`check_listen`; also a host name that resolves to a
            non-loopback address while ``web_token`` is unset.
        OrchestratorError: the address cannot be bound (in use, not ours).
    """
    host, port = check_listen(address, token, config_path)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise OrchestratorError(
            f"cannot listen on {address} (metrics_listen): {exc.strerror or exc}"
        ) from None
    if token is None:
        bound = [listener.socket.getsockname()[0] for listener in listeners]
        if not all(_is_loopback(ip) for ip in bound):
            for listener in listeners:
                await listener.aclose()
            raise ConfigError(config_path, _needs_token(address), key=_LISTEN_KEY)
    return listeners


def bound_addresses(listeners: list[Any]) -> list[str]:
    """``host:port`` of each listener (the real port when 0 was asked for)."""
    out = []
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        v6 = listener.socket.family == socket.AF_INET6
        out.append(f"[{host}]:{port}" if v6 else f"{host}:{port}")
    return out


# ----- serving -----


class _Changes:
    """Wakes the event streams when something changed (a transition, a new sample)."""

    def __init__(self) -> None:
        self.version = 0
        self._event = trio.Event()

    def notify(self, *_: object) -> None:
        self.version += 1
        self._event.set()
        self._event = trio.Event()

    async def wait_past(self, version: int) -> None:
        """Return once something changed after *version* was read."""
        while self.version <= version:
            await self._event.wait()


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _ClientGone(Exception):
    """The client closed, broke the connection, or stopped reading."""


class _Connection:
    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    async def _send(self, event: Any) -> None:
        data = self.conn.send(event)
        if not data:
            return
        with trio.move_on_after(SEND_TIMEOUT) as timeout:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _ClientGone from None
        if timeout.cancelled_caught:
            raise _ClientGone

    async def next_request(self) -> tuple[h11.Request, bytes] | None:
        """The next request and its body; None when the client closed or sent garbage."""
        request = None
        body = b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                self.conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    await self.error_and_close(413, b"request body too large\n")
                    return None
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, body
            else:  # ConnectionClosed, PAUSED
                return None

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"text/plain; charset=utf-8",
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *_SECURITY_HEADERS,
            *(extra or []),
        ]
        await self._send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def respond_json(self, status: int, document: Any) -> None:
        body = json.dumps(document, separators=(",", ":")).encode()
        await self.respond(status, body, b"application/json")

    async def error_and_close(self, status: int, message: bytes) -> None:
        """Answer a request we could not read (if the protocol still allows an answer)."""
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(_ClientGone, h11.LocalProtocolError):
                await self.respond(status, message, extra=[(b"connection", b"close")])
                await self.linger()

    async def linger(self) -> None:
        """Read (and drop) what the client is still sending, for a moment, before we
        close: closing with unread data resets the connection, and the client might
        never see our answer."""
        with trio.move_on_after(LINGER_SECONDS):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                drained = 0
                while drained < LINGER_BYTES and (data := await self.stream.receive_some()):
                    drained += len(data)


@contextlib.contextmanager
def _bounded_streams(site: _Site):
    if site.event_streams >= MAX_EVENT_STREAMS:
        yield False
        return
    site.event_streams += 1
    try:
        yield True
    finally:
        site.event_streams -= 1


class _Site:
    def __init__(self, app: WebApp, token: str | None):
        self.app = app
        self.token = token
        self.changes = _Changes()
        self.event_streams = 0
        app.add_change_listener(self.changes.notify)

    def authorized(self, request: h11.Request) -> bool:
        if self.token is None:
            return False
        expected = b"Bearer " + self.token.encode()
        for name, value in request.headers:
            if name == b"authorization":
                return hmac.compare_digest(value, expected)
        return False

    async def document(self) -> dict[str, Any]:
        await self.app.look()
        bots = self.app.all_info()
        return {"manager": "running", "actions": self.token is not None, "bots": bots}

    async def handle(self, conn: _Connection, request: h11.Request, body: bytes) -> bool:
        """Answer one request; False if the connection must close afterwards."""
        target = urlsplit(request.target.decode("ascii", "replace"))
        path = target.path
        method = request.method
        if method == b"GET" and path == "/":
            await conn.respond(200, PAGE, b"text/html; charset=utf-8", _PAGE_HEADERS)
        elif method == b"GET" and path == "/metrics":
            text = await self.app.metrics_text()
            await conn.respond(200, text.encode(), CONTENT_TYPE.encode())
        elif method == b"GET" and path == "/api/bots":
            await conn.respond_json(200, await self.document())
        elif method == b"GET" and path == "/events":
            await self.event_stream(conn)
            return False
        elif method == b"GET" and path.startswith("/api/logs/"):
            await self.logs(conn, request, unquote(path[len("/api/logs/") :]), target.query)
        elif method == b"POST" and path.startswith("/api/"):
            await self.action(conn, request, path[len("/api/") :])
        elif path in ("/", "/metrics", "/api/bots", "/events"):
            await conn.respond(405, b"method not allowed\n", extra=[(b"allow", b"GET")])
        else:
            await conn.respond(404, b"not found\n")
        return True

    async def logs(self, conn: _Connection, request: h11.Request, name: str, query: str) -> None:
        if self.token is not None and not self.authorized(request):
            await conn.respond(403, b"logs need the web token (Authorization: Bearer ...)\n")
            return
        path = self.app.log_path(name)
        if path is None:
            await conn.respond(404, f"unknown bot {name!r}\n".encode())
            return
        try:
            lines = min(MAX_LOG_LINES, max(1, int(parse_qs(query).get("lines", ["50"])[0])))
        except ValueError:
            await conn.respond(400, b"lines must be a number\n")
            return
        text = await trio.to_thread.run_sync(_tail, path, lines)
        await conn.respond(200, text)

    async def action(self, conn: _Connection, request: h11.Request, rest: str) -> None:
        verb, _, name = rest.partition("/")
        name = unquote(name)
        if verb not in WEB_ACTIONS or not name:
            await conn.respond(404, b"not found\n")
            return
        if self.token is None:
            message = "actions are disabled: set global_settings.web_token to enable them"
            await conn.respond_json(403, {"ok": False, "code": 1, "message": message})
            return
        if not self.authorized(request):
            message = "missing or wrong token (Authorization: Bearer ...)"
            await conn.respond_json(403, {"ok": False, "code": 1, "message": message})
            return
        try:
            command = Command.build(Action(verb), [name])
        except OrchestratorError as exc:
            await conn.respond_json(400, {"ok": False, "code": EXIT_USAGE, "message": str(exc)})
            return
        reply = await self.app.execute(command, source="status page")
        code = reply.get("code", 1)
        status = 200 if code == EXIT_OK else 404 if code == EXIT_USAGE else 409
        await conn.respond_json(status, reply)

    async def event_stream(self, conn: _Connection) -> None:
        with _bounded_streams(self) as admitted:
            if not admitted:
                retry = [(b"retry-after", b"10")]
                await conn.respond(503, b"too many live pages open\n", extra=retry)
                return
            headers = [(b"content-type", b"text/event-stream"), *_SECURITY_HEADERS]
            await conn._send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
            await conn._send(h11.Data(data=b"retry: 2000\n\n"))
            with trio.move_on_after(EVENT_STREAM_SECONDS):
                while True:
                    version = self.changes.version
                    document = json.dumps(await self.document(), separators=(",", ":"))
                    await conn._send(h11.Data(data=f"data: {document}\n\n".encode()))
                    with trio.move_on_after(EVENT_HEARTBEAT_SECONDS) as quiet:
                        await self.changes.wait_past(version)
                        await trio.sleep(EVENT_COALESCE_SECONDS)  # a burst: one update
                    if quiet.cancelled_caught:
                        await conn._send(h11.Data(data=b": still here\n\n"))
            await conn._send(h11.EndOfMessage())


def _tail(path: Path, lines: int) -> bytes:
    """The last *lines* lines of *path* (at most LOG_TAIL_BYTES), or a note if none."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            data = handle.read(LOG_TAIL_BYTES)
    except FileNotFoundError:
        return b"(no output yet)\n"
    except OSError as exc:
        return f"(cannot read {path.name}: {exc.strerror})\n".encode()
    kept = data.splitlines()[-lines:]
    return b"\n".join(kept) + b"\n" if kept else b"(no output yet)\n"


async def _serve_one(site: _Site, limiter: trio.CapacityLimiter, stream: trio.SocketStream):
    conn = _Connection(stream)
    async with stream:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(1):
                # Read the request first: closing on a client still sending resets the
                # connection, and the client would see no answer at all.
                with contextlib.suppress(h11.RemoteProtocolError):
                    await conn.next_request()
                await conn.error_and_close(503, b"too many clients\n")
            return
        try:
            await _converse(site, conn)
        finally:
            limiter.release()


async def _converse(site: _Site, conn: _Connection) -> None:
    timeout = REQUEST_TIMEOUT
    while True:
        with trio.move_on_after(timeout) as waited:
            try:
                got = await conn.next_request()
            except h11.RemoteProtocolError as exc:
                await conn.error_and_close(exc.error_status_hint, b"bad request\n")
                return
        if waited.cancelled_caught:
            if conn.conn.their_state is not h11.IDLE or timeout == REQUEST_TIMEOUT:
                with trio.move_on_after(1):
                    await conn.error_and_close(408, b"request timeout\n")
            return
        if got is None:
            return
        try:
            keep = await site.handle(conn, *got)
        except _ClientGone:
            return
        if not keep or conn.conn.our_state is h11.MUST_CLOSE:
            return
        try:
            conn.conn.start_next_cycle()
        except h11.LocalProtocolError:
            return
        timeout = KEEPALIVE_TIMEOUT


async def serve_web(
    listeners: list[Any],
    app: WebApp,
    token: str | None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the status page and ``/metrics`` on *listeners* until cancelled.

    **Cancellation:** closes the listeners; requests in progress (and live pages) are cut.
    """
    site = _Site(app, token)
    limiter = trio.CapacityLimiter(MAX_CONCURRENT_CLIENTS)
    handler: Callable[[trio.SocketStream], Awaitable[None]]

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_one(site, limiter, stream)

    await trio.serve_listeners(handler, listeners, task_status=task_status)
