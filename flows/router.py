"""The router: inspects an upload by its content and starts the flow for its kind.

This is the entry point of the pipeline (the ``process-file`` deployment): one run per file,
named after it. A file of a kind nobody handles, or one that cannot even be inspected, ends
``failed`` with its reason in the manifest; it is never skipped silently.
"""

from __future__ import annotations

from prefect import flow

from fileflow.errors import UnsupportedInput
from fileflow.mediator import FileRef, Mediation, display_name
from flows._common import file_tags, outcome
from flows.archive import archive_flow
from flows.drawing import drawing_flow
from flows.image import image_flow
from flows.office import office_flow
from flows.pdf import pdf_flow
from flows.text import text_flow
from flows.video import video_flow

FLOWS = {
    "image": image_flow,
    "pdf": pdf_flow,
    "office": office_flow,
    "drawing": drawing_flow,
    "video": video_flow,
    "archive": archive_flow,
    "text": text_flow,
}


@flow(name="process-file", flow_run_name="file:{name}", persist_result=False)
async def process_file(
    key: str, file_id: str, name: str, size: int, parent: str | None = None, depth: int = 0
):
    file = FileRef(file_id=file_id, name=display_name(name), key=key, size=size, parent=parent, depth=depth)
    m = Mediation(file)
    m.rt.tracker.started(file.token, file.name)
    if parent is None and m.rt.lane == "upload":  # the operators' cap on active uploads (fileflow/limits.py)
        async with m.rt.steering.file_slot("upload"):
            return await _route(m, file)
    return await _route(m, file)


async def _route(m: Mediation, file: FileRef):
    inspected = await m.step("inspect")
    if inspected is None:
        return outcome(await m.finish())
    info = inspected["metadata"]
    file = file.model_copy(update={"mime": info["mime"], "kind": info["kind"], "ext": info["extension"]})
    kind_flow = FLOWS.get(file.kind)
    if kind_flow is None:
        m.file = file
        m.fail("route", UnsupportedInput(f"no converter handles {info['mime']} ({info['description']})"))
        return outcome(await m.finish())
    with file_tags(file.kind):
        state = await kind_flow(file, inspected, return_state=True)
    return state
