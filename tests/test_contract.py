"""One contract over every registered converter."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import converters
from converters.base import ConversionResult, ConverterSpec
from fileflow.errors import FileflowError

KINDS = {"image", "pdf", "office", "drawing", "video", "archive", "text", "email", "audio", "markup", "*"}


@pytest.fixture(params=converters.BUILTINS)
def module(request):
    return converters.load(request.param)


def test_spec_is_complete(module):
    spec = module.SPEC
    assert isinstance(spec, ConverterSpec)
    assert module.__name__ == f"converters.{spec.name}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", spec.version)
    assert spec.kinds and spec.kinds <= KINDS
    assert spec.timeout_s > 0 and spec.memory_mb >= 256 and spec.retries >= 0
    assert spec.description


def test_every_service_a_converter_declares_is_one_the_engine_provides(module):
    """SPEC.services names what the engine starts beside the converter (fileflow.engine.services)."""
    from fileflow.engine.services import SERVICES

    assert isinstance(module.SPEC.services, tuple)
    assert set(module.SPEC.services) <= set(SERVICES), module.SPEC.services


def test_the_engine_names_no_converter():
    """A converter's needs are declared in its SPEC; the generic engine never branches on a name."""
    from dataclasses import fields

    from fileflow.engine.step import StepOutcome

    root = Path(__file__).resolve().parents[1]
    engine = [*(root / "fileflow" / "engine").glob("*.py"), root / "flows" / "step.py"]
    words = {f.name for f in fields(StepOutcome)}  # "language" is also what a step's outcome holds
    named = [(p.name, name) for p in engine for name in set(converters.BUILTINS) - words
             if re.search(rf"""["']{name}["']""", p.read_text())]
    assert named == []


def test_convert_is_a_pure_function_over_files(module):
    params = list(inspect.signature(module.convert).parameters)
    assert params == ["src", "out_dir", "options"]
    source = inspect.getsource(module)
    assert not re.search(r"^\s*(import|from)\s+prefect", source, re.M), "converters do not import Prefect"
    assert "os.environ" not in source and "getenv" not in source, "converters read no environment"


def test_garbage_gets_a_typed_error_and_nothing_outside_out_dir(module, tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(bytes(range(256)) * 64)
    out = tmp_path / "out"
    options = {"mime": "application/octet-stream", "unoserver_port": 9, "depth": 0}
    try:
        result = module.convert(src, out, options)
    except FileflowError:
        pass
    else:
        assert isinstance(result, ConversionResult)
        for rendition in result.renditions:
            assert (out / rendition.path).resolve().is_relative_to(out.resolve())
    assert {p.name for p in tmp_path.iterdir()} <= {"input.bin", "out"}


def test_registry_lists_every_converter_module():
    folder = Path(converters.__file__).parent
    helpers = {"__init__", "base", "geometry", "options", "sheets", "tesseract", "html_clean"}  # shared code, no SPEC
    modules = {p.stem for p in folder.glob("*.py")} - helpers
    assert modules == set(converters.BUILTINS)


def test_a_replacement_module_must_declare_the_converter_it_replaces():
    """FILEFLOW_CONVERTER_MODULES: a replacement runs under the converter's name, with its own spec."""
    faulty = converters.implementation("text_extract", "tests.extra_converters.faulty_text")
    assert faulty.SPEC.name == "text_extract" and faulty.SPEC.version != converters.spec("text_extract").version
    assert converters.implementation("text_extract", None) is converters.load("text_extract")
    with pytest.raises(TypeError, match="cannot replace 'ocr'"):
        converters.implementation("ocr", "tests.extra_converters.faulty_text")
