"""Services a converter declares in its SPEC (``services``), provided by the engine.

A converter stays a pure function over files; what it needs running beside it (LibreOffice for
``office_pdf`` today, perhaps a remote OCR engine tomorrow) it names in ``SPEC.services``, and
the engine starts it, passes its address in the step's options and stops it at the end. The
engine knows services by name, never converters by name.

What a service adds to a step's options says only where it listens: it is added after the
step's cache key is made, so it never changes which results are reused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from fileflow.errors import InvalidRequest
from fileflow.settings import PipelineSettings


class Service(Protocol):
    def options(self) -> dict[str, Any]:
        """Where the converter finds the service (started, or restarted if it died)."""

    def close(self) -> None: ...


class Office:
    """LibreOffice through unoserver (:mod:`fileflow.engine.office`).

    ``attach``: a step on a pool worker uses the machine's warm LibreOffice when
    ``FILEFLOW_UNOSERVER_PORT`` names one (``fileflow up`` starts it), else one of its own for
    the step. A mediator (``attach=False``) runs one of its own on that port (or a free one),
    started on first use.
    """

    def __init__(self, settings: PipelineSettings, *, attach: bool) -> None:
        self.port = settings.unoserver_port
        self.attached = attach and bool(self.port)
        self._server = None
        self._attach = attach

    def options(self) -> dict[str, Any]:
        if self.attached:
            return {"unoserver_host": "127.0.0.1", "unoserver_port": self.port}
        from fileflow.engine.office import UnoServer

        if self._server is None:
            self._server = UnoServer(port=0 if self._attach else self.port)
        self._server.ensure_running()
        return {"unoserver_host": self._server.host, "unoserver_port": self._server.port}

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@dataclass(frozen=True)
class ServiceSpec:
    make: Callable[..., Service]
    concurrency: int | None = None
    """Steps of one process using the service at once (LibreOffice converts one document at a
    time: more would only queue inside it); None for no bound."""


#: every service the engine provides, by the name a SPEC uses
SERVICES: dict[str, ServiceSpec] = {
    "office": ServiceSpec(Office, concurrency=1),
}


class Services:
    """The services of one process (a mediator, or one pool step): each started on first use,
    all closed together."""

    def __init__(self, settings: PipelineSettings, *, attach: bool = False) -> None:
        self.settings, self.attach = settings, attach
        self._running: dict[str, Service] = {}
        self._lock = threading.Lock()
        self._gates = {name: threading.Semaphore(spec.concurrency) for name, spec in SERVICES.items()
                       if spec.concurrency}

    def options(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The options that point a step at the services ``names`` (started if need be)."""
        found: dict[str, Any] = {}
        for name in names:
            with self._lock:
                service = self._running.get(name)
                if service is None:
                    service = self._running[name] = _spec(name).make(self.settings, attach=self.attach)
                found.update(service.options())
        return found

    def gate(self, names: tuple[str, ...]) -> threading.Semaphore | None:
        """What bounds the steps using ``names`` at once in this process (the first bounded one)."""
        return next((self._gates[n] for n in names if n in self._gates), None)

    def close(self) -> None:
        with self._lock:
            running, self._running = self._running, {}
        for service in running.values():
            service.close()


def _spec(name: str) -> ServiceSpec:
    try:
        return SERVICES[name]
    except KeyError:
        raise InvalidRequest(f"no service {name!r}: the engine provides {sorted(SERVICES)}") from None
