"""What every converter is: a frozen spec and a pure function over files.

A converter module defines ``SPEC`` (a :class:`ConverterSpec`) and
``convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult``.
``convert`` reads ``src``, writes its outputs under ``out_dir`` and returns what it made, with
paths relative to ``out_dir``. It imports no Prefect, reads no environment and keeps no module
state; heavy libraries are imported inside ``convert`` (through :func:`require`) so that the
registry stays cheap to import. Errors are raised from :mod:`fileflow.errors`.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROLES = ("web", "preview", "pdf", "poster", "svg", "text")

#: options the engine holds for every file (from settings, the upload's own options and the
#: file's place in its archive); a converter gets those its ``SPEC.reads`` names
SHARED_OPTIONS = frozenset({"ocr_languages", "ocr_allowed_languages", "tessdata", "preview_sizes", "max_depth", "depth"})


@dataclass(frozen=True)
class ConverterSpec:
    name: str
    version: str
    kinds: frozenset[str]
    """File kinds this converter accepts (image, pdf, office, drawing, video, archive, text, *)."""
    timeout_s: float = 60.0
    memory_mb: int = 2048
    """Address-space limit of the process running the step."""
    retries: int = 1
    """How often a transient failure (crash, timeout) is retried."""
    description: str = ""
    services: tuple[str, ...] = ()
    """What must run beside the converter (e.g. ``office``: LibreOffice through unoserver). The
    engine starts each and passes where it listens in the options; the converter names no
    process of its own."""
    reads: frozenset[str] = frozenset()
    """The run-wide options (:data:`SHARED_OPTIONS`: settings, per-upload options, the file's
    depth) this converter reads. Only these reach it, and only these are part of its cache
    key: changing the OCR languages redoes OCR, not the previews."""


@dataclass
class Rendition:
    role: str
    path: str
    mime: str
    width: int | None = None
    height: int | None = None
    bytes: int = 0

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown rendition role {self.role!r}; expected one of {ROLES}")


@dataclass
class Member:
    """A file found inside an archive, written under out_dir at ``path``."""

    name: str
    path: str
    size: int = 0


@dataclass
class ConversionResult:
    renditions: list[Rendition] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    language: str | None = None
    language_confidence: float | None = None
    members: list[Member] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fresh_members_dir(out_dir: Path, name: str = "members") -> Path:
    """``out_dir/<name>`` (``out_dir`` created if need be), emptied of what an earlier run into
    the same ``out_dir`` left (a link there is removed, never followed), so that it holds only
    what this run writes: nothing at all when the run fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    members_dir = out_dir / name
    if members_dir.is_symlink() or members_dir.is_file():
        members_dir.unlink()
    elif members_dir.exists():
        shutil.rmtree(members_dir)
    return members_dir


def refuse_past_depth(what: str, depth: int, max_depth: int) -> None:
    """A container (archive, e-mail) nested ``max_depth`` deep or more is not expanded."""
    from fileflow.errors import LimitExceeded

    if depth >= max_depth:
        raise LimitExceeded(f"{what} nested deeper than {max_depth} (this one is at depth {depth}; option max_depth)")


def require(module: str, package: str, debian: str | None = None) -> ModuleType:
    """Import a heavy dependency, or fail naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only on broken installs
        hint = f"pip install {package}" + (f" (and apt-get install {debian})" if debian else "")
        raise ImportError(f"{module} is missing: {hint}, or run `make setup`") from exc
