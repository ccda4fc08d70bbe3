"""A TCP proxy that a test can cut: the S3 endpoint "unreachable" without losing its data.

moto keeps its buckets in memory, so stopping its server would lose them. The stack talks to
moto through this proxy instead. :meth:`TcpProxy.cut` drops the open connections and resets
every new one at once (an RST, as from a host whose service is down), counting them in
``refused`` so a test can tell that something really tried to reach the endpoint meanwhile;
:meth:`TcpProxy.restore` forwards again. A fake at the network boundary, nothing inside fileflow.
"""

from __future__ import annotations

import socket
import struct
import threading


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self.accepted = 0
        self.refused = 0
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Drop the open connections and reset every new one until :meth:`restore`."""
        with self._lock:
            self._cut = True
            conns, self._conns = self._conns, set()
        for conn in conns:
            _reset(conn)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self.cut()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                if self._cut:
                    self.refused += 1
                    _reset(client)
                    continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns |= {client, upstream}
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns -= {src, dst}
            for sock in (src, dst):  # an orderly close: what was sent still arrives
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0), as a refused or broken connection looks to the client."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
