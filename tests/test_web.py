"""The HTTP listener against a fake supervisor: routes, the token, limits, addresses."""

from __future__ import annotations

import json

import pytest
import trio

from trio_orchestrator import web
from trio_orchestrator.errors import ConfigError

pytest.importorskip("h11")

TOKEN = "s3cret-token"


class FakeApp:
    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.executed = []
        self.looks = 0
        self.listeners = []
        self.state = "running"

    def all_info(self):
        return [{"name": "A", "state": self.state, "cpu_percent": 1.5, "memory_bytes": 1024}]

    async def look(self):
        self.looks += 1

    async def metrics_text(self):
        return "# HELP x y\n# TYPE x gauge\nx 1\n"

    async def execute(self, command, source="control socket"):
        self.executed.append((str(command), source))
        if command.name != "A":
            return {"ok": False, "code": 2, "message": f"unknown bot {command.name!r}"}
        return {"ok": True, "code": 0, "message": f"A {command.action.value}ed"}

    def log_path(self, name):
        return self.log_dir / f"{name}.log" if name == "A" else None

    def add_change_listener(self, listener):
        self.listeners.append(listener)

    def change(self, state):
        self.state = state
        for listener in self.listeners:
            listener()


async def _serve(nursery, app, token=None, address="127.0.0.1:0"):
    listeners = await web.bind_web(address, token, "cfg.yaml")
    await nursery.start(web.serve_web, listeners, app, token)
    return listeners[0].socket.getsockname()[1]


async def _request(port, method="GET", path="/", headers=(), body=b""):
    """One HTTP/1.1 request (Connection: close); (status, headers, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers]
        if body or method == "POST":
            head.append(f"Content-Length: {len(body)}")
        await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    return status, fields, payload


@pytest.fixture
def app(tmp_path):
    (tmp_path / "A.log").write_bytes(b"".join(b"[A] line %d\n" % i for i in range(100)))
    return FakeApp(tmp_path)


async def test_read_only_routes(app, nursery):
    port = await _serve(nursery, app)
    status, headers, body = await _request(port, path="/metrics")
    assert status == 200 and body.endswith(b"x 1\n")
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    status, headers, body = await _request(port, path="/")
    assert status == 200 and b"<table" in body and b"EventSource" in body
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    status, _, body = await _request(port, path="/api/bots")
    document = json.loads(body)
    assert document["actions"] is False and document["bots"][0]["name"] == "A"
    assert app.looks >= 1
    status, _, body = await _request(port, path="/api/logs/A?lines=3")
    assert status == 200 and body == b"[A] line 97\n[A] line 98\n[A] line 99\n"
    assert (await _request(port, path="/api/logs/..%2Fetc%2Fpasswd"))[0] == 404
    assert (await _request(port, path="/nope"))[0] == 404
    assert (await _request(port, "DELETE", "/metrics"))[0] == 405


async def test_actions_are_refused_without_a_configured_token(app, nursery):
    port = await _serve(nursery, app)
    status, _, body = await _request(port, "POST", "/api/stop/A")
    assert status == 403 and b"web_token" in body
    assert app.executed == []


async def test_actions_need_the_token_in_the_header(app, nursery):
    port = await _serve(nursery, app, TOKEN)
    assert (await _request(port, "POST", "/api/stop/A"))[0] == 403
    bad = [("Authorization", "Bearer wrong")]
    assert (await _request(port, "POST", "/api/stop/A", bad))[0] == 403
    # Never from the URL.
    assert (await _request(port, "POST", f"/api/stop/A?token={TOKEN}"))[0] == 403
    assert app.executed == []
    good = [("Authorization", f"Bearer {TOKEN}")]
    status, _, body = await _request(port, "POST", "/api/stop/A", good)
    assert status == 200 and json.loads(body)["ok"] is True
    assert app.executed == [("stop A", "status page")]
    assert (await _request(port, "POST", "/api/restart/Nope", good))[0] == 404
    assert (await _request(port, "POST", "/api/update/A", good))[0] == 404  # not a web action
    # With a token, logs need it too.
    assert (await _request(port, path="/api/logs/A"))[0] == 403
    assert (await _request(port, path="/api/logs/A", headers=good))[0] == 200
    assert json.loads((await _request(port, path="/api/bots"))[2])["actions"] is True


async def test_events_stream_pushes_changes(app, nursery):
    port = await _serve(nursery, app)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""

        async def read_until(needle):
            nonlocal received
            with trio.fail_after(5):
                while needle not in received:
                    received += await stream.receive_some(65536)

        await read_until(b'"state":"running"')
        assert b"text/event-stream" in received
        app.change("stopped")
        await read_until(b'"state":"stopped"')


async def test_a_slow_client_is_dropped(app, nursery, monkeypatch):
    monkeypatch.setattr(web, "REQUEST_TIMEOUT", 0.3)
    port = await _serve(nursery, app)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHo")  # and nothing more
        with trio.fail_after(3):
            data = b""
            while chunk := await stream.receive_some(1024):
                data += chunk
    assert data.startswith(b"HTTP/1.1 408")
    # The server is still fine.
    assert (await _request(port, path="/metrics"))[0] == 200


async def test_too_many_clients_get_503(app, nursery, monkeypatch):
    monkeypatch.setattr(web, "MAX_CONCURRENT_CLIENTS", 2)
    port = await _serve(nursery, app)
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
    await trio.sleep(0.2)
    status, _, _ = await _request(port, path="/metrics")
    assert status == 503
    for stream in idle:
        await stream.aclose()
    await trio.sleep(0.2)
    assert (await _request(port, path="/metrics"))[0] == 200


async def test_garbage_and_oversized_requests(app, nursery):
    port = await _serve(nursery, app)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"\x00\x01garbage\r\n\r\n")
        data = await stream.receive_some(1024)
    assert data.startswith(b"HTTP/1.1 400")
    status, _, _ = await _request(port, "GET", "/", [("X-Big", "y" * 40000)])
    assert status == 431
    good = [("Authorization", "Bearer x")]
    assert (await _request(port, "POST", "/api/stop/A", good, b"z" * 10000))[0] == 413


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
        (":9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_parse_listen(address, expected):
    assert web.parse_listen(address) == expected


@pytest.mark.parametrize("address", ["9464", "host:", "host:99999", "::1:9464", "a:b"])
def test_parse_listen_rejects(address):
    with pytest.raises(ValueError):
        web.parse_listen(address)


def test_non_loopback_needs_a_token():
    with pytest.raises(ConfigError, match=r"not a loopback address.*web_token"):
        web.check_listen("0.0.0.0:9464", None, "cfg.yaml")
    assert web.check_listen("0.0.0.0:9464", TOKEN, "cfg.yaml") == ("0.0.0.0", 9464)
    assert web.check_listen("127.0.0.2:1", None, "cfg.yaml") == ("127.0.0.2", 1)


async def test_loopback_by_default(app, nursery):
    listeners = await web.bind_web(":0", None, "cfg.yaml")
    assert [listener.socket.getsockname()[0] for listener in listeners] == ["127.0.0.1"]
    for listener in listeners:
        await listener.aclose()


async def test_an_address_in_use_is_one_clear_error(app, nursery):
    port = await _serve(nursery, app)
    with pytest.raises(Exception, match=f"cannot listen on 127.0.0.1:{port}"):
        await web.bind_web(f"127.0.0.1:{port}", None, "cfg.yaml")
