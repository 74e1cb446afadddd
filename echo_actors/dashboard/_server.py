# SPDX-License-Identifier: MIT
"""The dashboard's HTTP server: one page, its live figures by Server-Sent Events, a requeue POST.

Built on the standard library's ``ThreadingHTTPServer`` in a daemon thread:
no dependency to add, and it works alike in a thread or a gevent-patched
process (where its threads are greenlets). One page and a stream of JSON
every half second do not need more.

Guards: every request's ``Host`` must name the address served (a DNS
rebinding page cannot talk to it); the requeue POST needs the token the
page carries and, when the browser says where it comes from (``Origin``,
``Sec-Fetch-Site``), this very origin; a cross-origin page cannot read the
token nor send the header without a preflight, which is refused. Off
loopback every request also needs the token as the HTTP Basic password.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import html
import ipaddress
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from echo_actors._logging import get_logger
from echo_actors.dashboard._sources import History

__all__ = ["Dashboard"]

_log = get_logger("echo_actors.dashboard")
_TICK = 0.5  # seconds between two figures sent to a page
_MAX_BODY = 4096


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Dashboard:
    """A served dashboard: ``url``, ``port``, ``token``; :meth:`close` stops it.

    Use :func:`echo_actors.dashboard.serve` to make one.
    """

    def __init__(self, source: Any, host: str, port: int, token: str | None,
                 allow_remote: bool) -> None:
        if not _is_loopback(host):
            if not allow_remote:
                raise ValueError(
                    f"the dashboard serves loopback only unless told: host {host!r} needs "
                    "allow_remote=True (--allow-remote) and a token"
                )
            if not token:
                raise ValueError("a dashboard off loopback needs a token (its password)")
        self.source = source
        self.remote = not _is_loopback(host)
        self.token = token or secrets.token_urlsafe(24)
        self.history = History(source)
        self._closing = threading.Event()
        self._page = resources.files("echo_actors.dashboard").joinpath("page.html").read_text(
            encoding="utf-8"
        )
        handler = type("_BoundHandler", (_Handler,), {"dashboard": self})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.host = host
        self.port: int = self.server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        names = {shown, "localhost", "127.0.0.1", "[::1]"} if not self.remote else {shown}
        self.allowed_hosts = {f"{name}:{self.port}" for name in names}
        self.history.start()
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="echo-dashboard", daemon=True)
        self._thread.start()

    def page(self, nonce: str) -> bytes:
        """The page, with its token, title and the script's nonce filled in (escaped)."""
        text = self._page.replace("{{TOKEN}}", html.escape(self.token, quote=True))
        text = text.replace("{{NONCE}}", nonce)
        text = text.replace("{{TITLE}}", html.escape(self.source.title(), quote=True))
        return text.encode()

    def snapshot(self) -> dict[str, Any]:
        figures: dict[str, Any] = self.source.snapshot()
        figures["history"] = self.history.points_now()
        figures["title"] = self.source.title()
        return figures

    def close(self) -> None:
        """Stop serving (open event streams end within a tick)."""
        self._closing.set()
        self.history.stop()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Dashboard {self.url}>"


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "echo-actors-dashboard"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("dashboard_request", line=format % args)

    # Guards

    def _refuse(self, status: int, why: str) -> None:
        body = json.dumps({"error": why}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _guard(self) -> bool:
        """Host named as served, and off loopback the token as the Basic password."""
        board = self.dashboard
        host = self.headers.get("Host", "")
        if host.lower() not in board.allowed_hosts:
            self._refuse(421, "this dashboard does not answer for that Host")
            return False
        if board.remote and not self._authorised():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="echo-actors dashboard"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        return True

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "")
        if not given.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(given[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), self.dashboard.token.encode())

    def _same_origin(self) -> bool:
        board = self.dashboard
        fetch_site = self.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site != "same-origin":
            return False
        origin = self.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme != "http" or parts.netloc.lower() not in board.allowed_hosts:
                return False
        token = self.headers.get("X-Echo-Token", "")
        return hmac.compare_digest(token.encode(), board.token.encode())

    # Routes

    def do_GET(self) -> None:
        if not self._guard():
            return
        path = urlsplit(self.path).path
        if path == "/":
            nonce = secrets.token_urlsafe(16)
            self._send(200, "text/html; charset=utf-8", self.dashboard.page(nonce), nonce)
        elif path == "/snapshot":
            self._send_json(self.dashboard.snapshot())
        elif path == "/events":
            self._events()
        else:
            self._refuse(404, "not found")

    def do_POST(self) -> None:
        if not self._guard():
            return
        if urlsplit(self.path).path != "/requeue":
            self._refuse(404, "not found")
            return
        if not self._same_origin():
            self._refuse(403, "requeue is accepted from this dashboard's own page only")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= _MAX_BODY:
                raise ValueError("body size")
            body = json.loads(self.rfile.read(length))
            action_id = body["id"]
            if not isinstance(action_id, str) or not action_id:
                raise ValueError("id")
        except (ValueError, KeyError, TypeError):
            self._refuse(400, 'expected a JSON body {"id": "<action id>"}')
            return
        requeued = self.dashboard.source.requeue(action_id)
        _log.info("dashboard_requeue", action_id=action_id, requeued=requeued)
        self._send_json({"requeued": requeued})

    def do_OPTIONS(self) -> None:
        self._refuse(403, "no cross-origin requests")

    def _send(self, status: int, kind: str, body: bytes, nonce: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header(
            "Content-Security-Policy",
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        )
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, figures: Any) -> None:
        self._send(200, "application/json", json.dumps(figures).encode())

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.close_connection = True
        closing = self.dashboard._closing
        with contextlib.suppress(OSError):  # the page went away
            while not closing.is_set():
                try:
                    figures = json.dumps(self.dashboard.snapshot())
                except Exception as exc:  # noqa: BLE001 -  # the source is stopping: say so, keep the stream
                    figures = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
                self.wfile.write(f"data: {figures}\n\n".encode())
                self.wfile.flush()
                if closing.wait(_TICK):
                    break
