"""What crosses every boundary of a step: the request the mediator sends, the outcome it gets back.

A step is sent to a warm child of the mediator (local placement), to a worker of the
converter's pool as the ``payload`` parameter of a ``converter-step`` run (pool placement), or
straight to :func:`fileflow.engine.execute.run_step` (the bench's bare converters). Each way
carries the same :class:`StepRequest`; what comes back is a :class:`StepOutcome`. Both are
frozen and turn into plain JSON (``to_dict``) where they cross a process or the Prefect API,
and back (``from_dict``) on the other side; step results persisted before this type existed
have the same shape and load as outcomes too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from blocks.storage import StorageConfig


@dataclass(frozen=True)
class StepRequest:
    converter: str
    """The module that runs the step: a built-in converter's name or a replacement's dotted path."""
    input_key: str
    input_ext: str
    output_prefix: str
    """Where its renditions go: ``derived/<sha256>/<converter>``."""
    options: Mapping[str, Any] = field(default_factory=dict)
    storage: StorageConfig | None = None
    """None across the Prefect API: a pool's worker uses its own storage settings (parameters
    are visible to every operator and must carry no credentials)."""
    scratch_dir: str | None = None

    def with_options(self, more: Mapping[str, Any]) -> StepRequest:
        return replace(self, options={**self.options, **more})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = dict(self.options)
        if self.storage is None:
            data.pop("storage")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepRequest:
        storage = data.get("storage")
        return cls(
            converter=data["converter"], input_key=data["input_key"], input_ext=data["input_ext"],
            output_prefix=data["output_prefix"], options=dict(data.get("options") or {}),
            storage=StorageConfig(**storage) if isinstance(storage, Mapping) else storage,
            scratch_dir=data.get("scratch_dir"),
        )


@dataclass(frozen=True)
class StepOutcome:
    """What a step stored and found: renditions (with their storage keys), metadata, text
    language, members (each stored under its own content-addressed key)."""

    converter: str
    converter_version: str
    duration_s: float
    renditions: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    language: str | None = None
    language_confidence: float | None = None
    members: tuple[Mapping[str, Any], ...] = ()
    """``{"name", "sha256", "key", "size"}`` of each file found inside the input."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["renditions"] = [dict(r) for r in self.renditions]
        data["members"] = [dict(m) for m in self.members]
        data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepOutcome:
        return cls(
            converter=data.get("converter") or "", converter_version=data["converter_version"],
            duration_s=data.get("duration_s") or 0.0, renditions=tuple(data.get("renditions") or ()),
            metadata=dict(data.get("metadata") or {}), language=data.get("language"),
            language_confidence=data.get("language_confidence"), members=tuple(data.get("members") or ()),
        )
