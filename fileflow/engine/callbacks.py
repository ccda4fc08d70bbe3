"""Answers that arrive: a durable outbox of HTTP deliveries in storage, and its drain.

Whoever wants an upload service told something (the global webhook of every finished file,
a per-upload callback URL) calls :func:`enqueue`: it writes one record under
``callbacks/pending/`` and returns at once, never touching the network. The deliverer
(``fileflow deliver``, :mod:`fileflow.server.deliverer`; started by ``fileflow up`` and by the
Helm chart) calls :func:`drain` again and again: every due record is POSTed, signed, and moved
to ``callbacks/delivered/`` on a 2xx answer, retried with doubling waits and jitter on anything
else, and moved to ``callbacks/failed/`` once its retry window (``FILEFLOW_CALLBACK_RETRY_WINDOW_S``,
from when it was enqueued) is spent. ``fileflow status`` and ``fileflow audit`` report the failed ones.

What can happen, and what is left behind:

==========================================  =================================================
the deliverer is killed before or mid-POST  the record stays pending: sent again (at least once;
                                            receivers dedupe on ``X-Fileflow-Delivery``)
killed after the POST, before the move      the same: the receiver may see it twice
killed between writing ``delivered/`` and   the next drain finds both and only removes the
removing ``pending/``                       pending one (no second POST)
the same ``delivery_id`` enqueued twice     one record (:func:`enqueue` returns False)
==========================================  =================================================

A record's key is the SHA-256 of its ``delivery_id`` (any string the caller chooses), so ids
never become storage paths. The body is serialised once, at enqueue: every attempt sends, and
signs, the same bytes.

Signature (docs/callbacks.md has the receiver's side): ``X-Fileflow-Timestamp: <unix seconds>``
and ``X-Fileflow-Signature: sha256=<hex>``, the HMAC-SHA256 with ``FILEFLOW_CALLBACK_SECRET`` of
``<timestamp>.`` followed by the exact body bytes: binding the time stops an old delivery from
being replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from blocks.storage import Store
from fileflow import retry
from fileflow.settings import CallbackSettings

log = logging.getLogger("fileflow.engine.callbacks")

OUTBOX = "callbacks"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

SIGNATURE_HEADER = "X-Fileflow-Signature"
TIMESTAMP_HEADER = "X-Fileflow-Timestamp"
DELIVERY_HEADER = "X-Fileflow-Delivery"

#: a receiver's answer kept in a record (and shown by status/audit) is cut to this length
ANSWER_CHARS = 300


def record_key(state: str, delivery_id: str) -> str:
    """Where the record of ``delivery_id`` lives while it is in ``state``."""
    return f"{OUTBOX}/{state}/{hashlib.sha256(delivery_id.encode()).hexdigest()}.json"


def check_url(url: str) -> str:
    """``url`` if a delivery can be made to it (http or https, with a host); ValueError if not."""
    if not isinstance(url, str):
        raise ValueError(f"a callback URL must be a string, not {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    return url


def encode_body(body: dict) -> bytes:
    """The exact bytes sent (and signed) for ``body``."""
    if not isinstance(body, dict):
        raise ValueError(f"a callback body must be a JSON object (dict), not {type(body).__name__}")
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the callback body is not JSON: {exc}") from exc


def enqueue(store: Store, *, delivery_id: str, url: str, body: dict, channel: str = "callback") -> bool:
    """Record a delivery of ``body`` to ``url`` in the outbox; False if ``delivery_id`` is known.

    Durable once it returns (the record is in storage), idempotent per ``delivery_id`` (in any
    state: pending, delivered or failed), and never waits on the network beyond storage.
    ``channel`` is ``"callback"`` (a per-upload URL) or ``"webhook"`` (the global webhook: the
    deliverer adds ``FILEFLOW_NOTIFY_WEBHOOK_HEADERS``, which are never written to storage).
    Raises ValueError for an empty id, a URL that is not http(s) or a body that is not JSON.
    """
    if not isinstance(delivery_id, str) or not delivery_id.strip():
        raise ValueError("a delivery needs a non-empty delivery_id")
    if channel not in ("callback", "webhook"):
        raise ValueError(f"channel is 'callback' or 'webhook', not {channel!r}")
    check_url(url)
    payload = encode_body(body).decode()
    if any(store.exists(record_key(state, delivery_id)) for state in (DELIVERED, FAILED)):
        return False
    now = time.time()
    record = {
        "delivery_id": delivery_id, "url": url, "channel": channel, "body": payload,
        "created": now, "attempts": 0, "next_at": now, "last_error": None,
    }
    return store.put_new(json.dumps(record).encode(), record_key(PENDING, delivery_id))


# -- signing --------------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 with ``secret`` of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: float = 300, now: float | None = None) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (docs/callbacks.md)."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    given = lower.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(given, signature(secret, timestamp, body))


def signed_headers(secret: str | None, delivery_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(now or time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "fileflow-deliverer",
               DELIVERY_HEADER: delivery_id, TIMESTAMP_HEADER: timestamp}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
    return headers


# -- the drain ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    delivery_id: str
    state: str  # delivered | failed | pending (to be retried)
    detail: str


class Deliverer:
    """Drains the outbox of one storage; one per deployment (two would both POST a record)."""

    def __init__(self, store: Store, settings: CallbackSettings, *, webhook_headers: dict[str, str] | None = None,
                 rng=random.random):
        import httpx

        self.store = store
        self.settings = settings
        self.secret = settings.secret.get_secret_value() if settings.secret else None
        self.webhook_headers = dict(webhook_headers or {})
        self.rng = rng
        self.http = httpx.Client(timeout=settings.timeout_s, follow_redirects=False)
        self.pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="deliver")
        self._waiting: dict[str, float] = {}  # pending key -> its next attempt, as this process wrote it

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.http.close()

    def __enter__(self) -> "Deliverer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def due(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """Pending records whose next attempt is due, oldest first.

        A record this deliverer rescheduled is not read again before its time (only this
        process writes pending records once they exist): with thousands waiting on a receiver
        that is down, a poll costs one listing, not thousands of reads."""
        records = []
        keys = self.store.keys(f"{OUTBOX}/{PENDING}/")
        live = set(keys)
        self._waiting = {k: at for k, at in self._waiting.items() if k in live}
        for key in keys:
            if self._waiting.get(key, 0) > now:
                continue
            try:
                data = self.store.get_bytes(key)
            except Exception as exc:
                if _missing(exc):
                    continue  # removed since the listing (retry_failed, an operator)
                raise
            try:
                record = json.loads(data)
                float(record["next_at"]), float(record["created"]), int(record["attempts"])
                record["url"], record["body"], record["delivery_id"]
            except (ValueError, KeyError, TypeError) as exc:
                log.error("outbox record %s is unreadable (%s); moved to %s/", key, exc, FAILED)
                self._move_unreadable(key, data)
                continue
            if record["next_at"] <= now:
                records.append((key, record))
            else:
                self._waiting[key] = record["next_at"]
        return sorted(records, key=lambda kr: kr[1]["created"])

    def _move_unreadable(self, key: str, data: bytes) -> None:
        name = key.rsplit("/", 1)[-1]
        self.store.put_bytes(json.dumps({"delivery_id": f"unreadable:{name}", "url": None, "attempts": 0,
                                         "last_error": "the outbox record is unreadable",
                                         "raw": data.decode(errors="replace")[:2000], "finished": time.time()}).encode(),
                             f"{OUTBOX}/{FAILED}/{name}")
        self.store.delete(key)

    def drain(self, now: float | None = None) -> list[Outcome]:
        """Attempt every due delivery once (``concurrency`` at a time); what became of each."""
        now = time.time() if now is None else now
        return list(self.pool.map(lambda kr: self.attempt(*kr), self.due(now)))

    def attempt(self, key: str, record: dict[str, Any]) -> Outcome:
        delivery_id = record["delivery_id"]
        for state in (DELIVERED, FAILED):  # finished by a deliverer that died before removing it
            if self.store.exists(record_key(state, delivery_id)):
                self.store.delete(key)
                return Outcome(delivery_id, state, "already moved")
        body = record["body"].encode()
        headers = signed_headers(self.secret, delivery_id, body)
        if record.get("channel") == "webhook":
            headers.update(self.webhook_headers)
        started = time.time()
        try:
            answer = self.http.post(record["url"], content=body, headers=headers)
            ok, detail = answer.is_success, f"HTTP {answer.status_code}: {answer.text[:ANSWER_CHARS]}".rstrip(": ")
        except Exception as exc:  # refused, reset, timed out, bad TLS: all worth another try
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:ANSWER_CHARS]
        record = {**record, "attempts": record["attempts"] + 1, "last_attempt": started, "last_error": None if ok else detail}
        if ok:
            return self._move(key, record, DELIVERED, detail)
        wait = retry.doubling_with_jitter(record["attempts"], self.settings.first_retry_s, self.settings.max_retry_s,
                                          self.rng)
        if started + wait > record["created"] + self.settings.retry_window_s:
            log.error("callback %s to %s failed for good after %d attempts: %s", delivery_id, record["url"],
                      record["attempts"], detail)
            return self._move(key, record, FAILED, detail)
        record["next_at"] = started + wait
        self.store.put_bytes(json.dumps(record).encode(), key)
        self._waiting[key] = record["next_at"]
        log.warning("callback %s to %s: attempt %d failed (%s); next in %.0f s", delivery_id, record["url"],
                    record["attempts"], detail, wait)
        return Outcome(delivery_id, PENDING, detail)

    def _move(self, key: str, record: dict[str, Any], state: str, detail: str) -> Outcome:
        self._waiting.pop(key, None)
        record = {**record, "finished": time.time()}
        self.store.put_new(json.dumps(record).encode(), record_key(state, record["delivery_id"]))
        self.store.delete(key)  # after the new record exists: a crash between leaves both, never neither
        return Outcome(record["delivery_id"], state, detail)


def _missing(exc: BaseException) -> bool:
    """Whether a read failed because the object is not there (a local file, or S3's 404)."""
    if isinstance(exc, FileNotFoundError):
        return True
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


# -- what status and audit show ---------------------------------------------------------------


def pending_count(store: Store) -> int:
    return len(store.keys(f"{OUTBOX}/{PENDING}/"))


def failed_deliveries(store: Store) -> list[dict[str, Any]]:
    """Every delivery that finally failed: id, url, attempts, last error, when it was given up."""
    out = []
    for key in store.keys(f"{OUTBOX}/{FAILED}/"):
        try:
            record = json.loads(store.get_bytes(key))
        except Exception as exc:
            if _missing(exc) or isinstance(exc, ValueError):
                continue
            raise
        out.append({"delivery_id": record.get("delivery_id"), "url": record.get("url"),
                    "channel": record.get("channel"), "attempts": record.get("attempts"),
                    "last_error": record.get("last_error"), "created": record.get("created"),
                    "finished": record.get("finished")})
    return sorted(out, key=lambda r: r.get("finished") or 0)


def retry_failed(store: Store, delivery_ids: Iterable[str] | None = None) -> list[str]:
    """Put failed deliveries (all, or those of ``delivery_ids``) back in the outbox, with a fresh
    retry window; the ids moved (``fileflow deliver --retry-failed``, after the receiver is fixed)."""
    wanted = set(delivery_ids) if delivery_ids is not None else None
    moved = []
    for key in store.keys(f"{OUTBOX}/{FAILED}/"):
        record = json.loads(store.get_bytes(key))
        if record.get("url") is None or (wanted is not None and record["delivery_id"] not in wanted):
            continue
        now = time.time()
        fresh = {k: v for k, v in record.items() if k not in ("finished", "last_attempt")}
        fresh.update(created=now, next_at=now, attempts=0)
        if store.put_new(json.dumps(fresh).encode(), record_key(PENDING, record["delivery_id"])):
            store.delete(key)
            moved.append(record["delivery_id"])
    return moved
