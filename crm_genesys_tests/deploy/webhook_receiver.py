"""A webhook receiver on a loopback port, served from a thread of the test: it records each JSON
body posted to it and answers with the status the test sets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """`url` takes POSTs; `messages` holds their JSON bodies in arrival order (those answered
    with `status` >= 300 too: `taken` has only the ones answered 2xx)."""

    url: str
    status: int = 200
    messages: list[dict[str, Any]] = field(default_factory=list)
    taken: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.taken)


@contextmanager
def webhook_receiver(path: str = "/hooks/T0KEN-SECRET") -> Iterator[Receiver]:
    """A receiver at `http://127.0.0.1:PORT{path}` (the path stands in for a webhook's token)."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with receiver.lock:
                receiver.messages.append(body)
                if receiver.status < 300:
                    receiver.taken.append(body)
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}{path}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
