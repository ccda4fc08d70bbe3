"""The record of a local stack and how a command finds the server and storage it should use.

``fileflow up`` records what it started in ``<home>/stack.json`` (the API URL, the storage folder,
the processes). Every command that talks to a stack reads it through :func:`use_stack`, which
sets ``PREFECT_API_URL`` (and ``FILEFLOW_STORAGE_PATH``) only where the environment does not
already say otherwise. It must run before Prefect's settings are first read, or Prefect falls
back to a server of its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_HOME = Path(".fileflow/stack")
STACK_FILE = "stack.json"


def stack_file(home: Path) -> Path:
    return home / STACK_FILE


def stack_state(home: Path) -> dict[str, Any] | None:
    """The stack recorded under ``home``, or None if none is."""
    path = stack_file(home)
    return json.loads(path.read_text()) if path.exists() else None


def use_stack(home: Path, *, storage: bool = True) -> dict[str, Any] | None:
    """Point this process at the stack recorded under ``home`` (its API, and its storage folder
    when ``storage``), unless the environment already names them; the record, or None."""
    state = stack_state(home)
    if state is not None:
        os.environ.setdefault("PREFECT_API_URL", state["api_url"])
        if storage and state.get("storage_path"):
            os.environ.setdefault("FILEFLOW_STORAGE_PATH", state["storage_path"])
    return state


#: the CA bundle of Prefect's clients when the stack's API is plain HTTP (``http://127.0.0.1``):
#: one self-signed certificate whose key was discarded, so it lets no TLS peer be verified, and
#: no TLS is ever spoken to an ``http://`` API. Prefect builds a verifying SSL context for every
#: client it creates, and it creates one per flow run engine, per concurrency lease, per
#: result-storage lookup ...: parsing certifi's whole bundle each time is a large share of a
#: mediator's CPU, parsing this one certificate is next to nothing.
#: ``FILEFLOW_STACK_PLAIN_HTTP_CA=0`` keeps Prefect's default; a ``PREFECT_API_SSL_CERT_FILE`` or
#: ``PREFECT_API_TLS_INSECURE_SKIP_VERIFY`` of your own is always kept.
PLAIN_HTTP_CA_BUNDLE = Path(__file__).with_name("plain_http_ca.pem")


def client_tls_env(api_url: str, environ: dict[str, str]) -> dict[str, str]:
    """What the stack adds to its processes' environment for Prefect's API client's TLS."""
    own = {"PREFECT_API_SSL_CERT_FILE", "PREFECT_API_TLS_INSECURE_SKIP_VERIFY"} & environ.keys()
    if api_url.startswith("http://") and not own and environ.get("FILEFLOW_STACK_PLAIN_HTTP_CA", "1") != "0":
        return {"PREFECT_API_SSL_CERT_FILE": str(PLAIN_HTTP_CA_BUNDLE)}
    return {}


#: one record per process of the stack, written by its supervisor (fileflow/server/supervise.py):
#: ``<home>/supervised/<name>.json`` with its pid, restarts, crashes and how it last ended
SUPERVISED_DIR = "supervised"


def supervised_file(home: Path, name: str) -> Path:
    return home / SUPERVISED_DIR / f"{name}.json"


def write_supervised(home: Path, name: str, record: dict[str, Any]) -> None:
    """Replace a process's record at once (a reader never sees half of one)."""
    path = supervised_file(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(record, indent=2))
    part.replace(path)


def supervised_state(home: Path) -> dict[str, dict[str, Any]]:
    """Every supervised process of the stack under ``home``, by name (empty if none)."""
    folder = home / SUPERVISED_DIR
    found = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        found[record.get("name", path.stem)] = record
    return found
