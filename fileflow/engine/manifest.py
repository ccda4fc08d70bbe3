"""The manifest: one JSON document per input file, what downstream systems read.

``docs/manifest.schema.json`` is generated from these models (``fileflow schema``) and a test
keeps it in step with the code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Kind = Literal["image", "pdf", "office", "drawing", "video", "archive", "text", "email", "audio", "markup", "unknown"]


class StepError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="error class from fileflow.errors, e.g. CorruptInput")
    message: str


class StepRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="converter name")
    converter_version: str | None
    status: Literal["completed", "failed", "skipped"]
    duration_s: float | None = None
    cached: bool = Field(False, description="result reused from an earlier run of the same version")
    error: StepError | None = None
    input: str | None = Field(None, description="the step whose output this step read; null: the original file")


class RenditionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["web", "preview", "pdf", "poster", "svg", "text"]
    path: str = Field(description="relative to the storage root (the --out folder)")
    mime: str
    width: int | None = None
    height: int | None = None
    bytes: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    file_id: str = Field(description="SHA-256 hex of the content")
    name: str = Field(description="the uploaded name, sanitised for display")
    size: int
    mime: str | None
    kind: Kind
    status: Literal["completed", "failed"]
    steps: list[StepRecord]
    renditions: list[RenditionRecord]
    text: str | None = Field(description="path of the extracted text, or null")
    language: str | None = Field(description="ISO 639-1 code, or null")
    language_confidence: float | None
    metadata: dict[str, Any]
    children: list[str] = Field(description="file_id of each archive member")
    parent: str | None = Field(description="file_id of the archive this file came from")

    def error(self) -> StepError | None:
        """The first failed step's error: why the file failed."""
        return next((s.error for s in self.steps if s.status == "failed"), None)

    def markdown(self) -> str:
        lines = [
            f"# {self.kind}: {self.name}",
            "",
            f"**status:** {self.status}  ",
            f"**file id:** `{self.file_id}`  ",
            f"**type:** {self.mime} ({self.size:,} bytes)  ",
            f"**language:** {self.language or '-'}"
            + (f" ({self.language_confidence:.2f})" if self.language_confidence else ""),
        ]
        if self.parent:
            lines.append(f"**inside archive:** `{self.parent}`  ")
        lines += ["", "| step | version | status | seconds | error |", "|---|---|---|---|---|"]
        for s in self.steps:
            err = f"{s.error.type}: {s.error.message}" if s.error else ""
            dur = "cached" if s.cached else (f"{s.duration_s:.2f}" if s.duration_s is not None else "")
            lines.append(f"| {s.name} | {s.converter_version or ''} | {s.status} | {dur} | {err.replace('|', '/')} |")
        if self.renditions:
            lines += ["", "| rendition | path | size | bytes |", "|---|---|---|---|"]
            for r in self.renditions:
                dims = f"{r.width}x{r.height}" if r.width else ""
                lines.append(f"| {r.role} | `{r.path}` | {dims} | {r.bytes:,} |")
        if self.children:
            lines += ["", f"**members:** {len(self.children)}"]
        return "\n".join(lines)


def json_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fileflow manifest"
    return schema
