"""An upload service's HTTP endpoint for tests: it keeps every POST and can be down at first.

Used where fileflow's answers (the webhook, per-upload callbacks) are checked as a receiver sees
them. It answers ``status`` (503) to the first ``refuse`` POSTs, then 204; with ``per_delivery``
the count is kept per delivery (the ``X-Fileflow-Delivery`` header, else the path), so every
answer of a stack meets a receiver that was down for its first attempts. ``hang_s`` holds every
request that long before answering (a receiver that hangs).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, refuse: int = 0, status: int = 503, hang_s: float = 0.0, per_delivery: bool = False,
                 path: str = "/hooks/fileflow"):
        self.refuse, self.status, self.hang_s, self.per_delivery = refuse, status, hang_s, per_delivery
        #: every POST, in order: path, headers, body (bytes), the code answered
        self.received: list[dict] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code = owner._answer(self.path, dict(self.headers), body)
                if owner.hang_s:
                    time.sleep(owner.hang_s)
                self.send_response(code)
                self.end_headers()
                if code != 204:
                    self.wfile.write(b"not now")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _delivery(path: str, headers: dict) -> str:
        return headers.get("X-Fileflow-Delivery", path)

    def _answer(self, path: str, headers: dict, body: bytes) -> int:
        with self._lock:
            if self.per_delivery:
                delivery = self._delivery(path, headers)
                before = sum(1 for r in self.received if self._delivery(r["path"], r["headers"]) == delivery)
            else:
                before = len(self.received)
            code = self.status if before < self.refuse else 204
            # "at": when it arrived, the moment a real receiver checks its signature's age
            self.received.append({"path": path, "headers": headers, "body": body, "code": code, "at": time.time()})
            return code

    def accepted(self, path: str | None = None) -> list[dict]:
        """The POSTs answered 204 (to ``path``, if given)."""
        return [r for r in self.received if r["code"] == 204 and (path is None or r["path"] == path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
