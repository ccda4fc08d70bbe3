"""The deliverer: the long-running process that drains the callback outbox.

``python -m fileflow.server.deliverer`` (and ``fileflow deliver``) reads the settings once,
then every ``FILEFLOW_CALLBACK_POLL_S`` seconds POSTs the due deliveries of
:mod:`fileflow.engine.callbacks`. ``fileflow up`` starts one, the Helm chart runs one (a single
replica: two would both POST a record). SIGTERM ends it after the attempts in flight; a
SIGKILL loses nothing either, the records being in storage.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from blocks.storage import Store
from fileflow.engine.callbacks import Deliverer
from fileflow.settings import CallbackSettings, NotifySettings, StorageSettings
from fileflow.server.logs import setup_logging

log = logging.getLogger("fileflow.server.deliverer")


def run(store: Store, settings: CallbackSettings, notify: NotifySettings, stop: threading.Event) -> None:
    """Drain until ``stop`` is set; a failing drain (storage down) is logged and tried again."""
    if settings.secret is None:
        log.warning("FILEFLOW_CALLBACK_SECRET is not set: deliveries are sent unsigned")
    with Deliverer(store, settings, webhook_headers=notify.webhook_headers) as deliverer:
        log.info("delivering callbacks from %s", store.config.describe())
        while not stop.is_set():
            try:
                deliverer.drain()
            except Exception:  # storage unreachable for longer than its own retries: wait, then again
                log.exception("draining the callback outbox failed; trying again")
            stop.wait(settings.poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fileflow.server.deliverer", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    setup_logging()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(Store(StorageSettings().config()), CallbackSettings(), NotifySettings(), stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
