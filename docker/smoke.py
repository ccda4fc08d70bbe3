"""Smoke check run inside each built image by docker/images.sh (as the image's user 10001).

    python /smoke.py <target> <samples folder>

Checks that the image runs as the non-root user, that /app is read-only to it, that the tools
its converters need are there, and runs a real step of that image's converters on a sample from
tests/samples, checking what the step made. Exit 0 when all pass; prints one line per check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET, SAMPLES = sys.argv[1], Path(sys.argv[2])
OUT = Path(tempfile.mkdtemp(prefix=f"smoke-{TARGET}-"))
failures: list[str] = []


def check(name: str, ok: bool, detail: object = "") -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {TARGET}: {name} {detail}".rstrip(), flush=True)
    if not ok:
        failures.append(name)


def tool(cmd: list[str], expect: str) -> None:
    path = shutil.which(cmd[0])
    if path is None:
        check(f"tool {cmd[0]}", False, "not on PATH")
        return
    # a wide terminal, so that rich's tables (fileflow converters) do not cut names short
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    text = (proc.stdout + proc.stderr).strip()
    line = next((l for l in text.splitlines() if expect in l), text.splitlines()[0] if text else "")
    check(f"tool {' '.join(cmd)}", proc.returncode == 0 and expect in text, line.strip()[:100] or proc.returncode)


def step(name: str, src: Path, options: dict | None = None):
    import importlib

    module = importlib.import_module(f"converters.{name}")
    out = OUT / name
    t0 = time.monotonic()
    result = module.convert(src, out, options or {})
    print(f"  ..   {TARGET}: step {name} on {src.name} took {time.monotonic() - t0:.2f} s", flush=True)
    for r in result.renditions:
        path = out / r.path
        check(f"step {name} -> {r.path}", path.is_file() and path.stat().st_size > 0, f"{path.stat().st_size if path.exists() else 0} bytes")
    return result


def common() -> None:
    check("runs as user 10001", os.getuid() == 10001, os.getuid())
    check("/app is not writable", not os.access("/app", os.W_OK))
    tool(["tini", "--version"], "tini version")
    import converters  # noqa: F401 - the registry imports
    import prefect

    check("prefect imports", prefect.__version__ == "3.9.1", prefect.__version__)
    tool(["fileflow", "converters"], "office_pdf")


def light() -> None:
    result = step("inspect", SAMPLES / "report.docx")
    check("inspect says office", result.metadata.get("kind") == "office" or "office" in str(result.metadata), result.metadata.get("kind"))
    text = SAMPLES / "notes-de.txt"
    result = step("language", text)
    check("language of notes-de.txt is de", result.language == "de", result.language)


def main() -> None:
    common()
    if TARGET == "mediator":
        light()
        proc = subprocess.run([sys.executable, "-m", "fileflow.server.worker", "--help"], capture_output=True, text=True, timeout=120)
        check("python -m fileflow.server.worker --help", proc.returncode == 0 and "--pool" in proc.stdout, proc.returncode)
    elif TARGET == "base":
        light()
        result = step("image_renditions", SAMPLES / "photo.jpg")
        check("image renditions made", len(result.renditions) >= 2, len(result.renditions))
        step("pdf_preview", SAMPLES / "scan.pdf")
        step("drawing_render", SAMPLES / "plan.dxf")
        step("video_poster", SAMPLES / "clip.mp4")
    elif TARGET == "ocr":
        tool(["tesseract", "--version"], "tesseract 5")
        from PIL import Image, ImageDraw, ImageFont

        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 48)
        image = Image.new("L", (1400, 200), 255)
        ImageDraw.Draw(image).text((40, 60), "Quarterly invoice 4711 approved", font=font, fill=0)
        src = OUT / "words.png"
        image.save(src)
        result = step("ocr", src, {"ocr_languages": "eng"})
        text = (OUT / "ocr" / result.renditions[0].path).read_text() if result.renditions else ""
        check("ocr read the words", "invoice 4711" in text.lower(), repr(text.strip()[:60]))
    elif TARGET == "office":
        tool(["soffice", "--version"], "LibreOffice")
        proc = subprocess.run(["/usr/bin/python3", "-c", "import uno"], capture_output=True, text=True)
        check("/usr/bin/python3 imports uno", proc.returncode == 0, proc.stderr.strip()[-200:])
        from fileflow.engine.office import UnoServer

        with UnoServer() as server:
            result = step("office_pdf", SAMPLES / "report.docx", server.options)
        check("office_pdf made pages", result.metadata.get("page_count", 0) >= 1, result.metadata.get("page_count"))
    elif TARGET == "video":
        tool(["ffmpeg", "-version"], "ffmpeg version")
        result = step("video_transcode", SAMPLES / "clip.mp4")
        check("transcode is H.264", result.metadata.get("video_codec") == "h264", result.metadata.get("video_codec"))
    else:
        check("known target", False, TARGET)
    shutil.rmtree(OUT, ignore_errors=True)
    if failures:
        print(f"{TARGET}: {len(failures)} check(s) failed: {', '.join(failures)}")
        sys.exit(1)
    print(f"{TARGET}: all checks passed")


if __name__ == "__main__":
    main()
