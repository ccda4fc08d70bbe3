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
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "base", "geometry", "options", "html_clean"}
    assert modules == set(converters.BUILTINS)


def test_a_replacement_module_must_declare_the_converter_it_replaces():
    """FILEFLOW_CONVERTER_MODULES: a replacement runs under the converter's name, with its own spec."""
    faulty = converters.implementation("text_extract", "tests.extra_converters.faulty_text")
    assert faulty.SPEC.name == "text_extract" and faulty.SPEC.version != converters.spec("text_extract").version
    assert converters.implementation("text_extract", None) is converters.load("text_extract")
    with pytest.raises(TypeError, match="cannot replace 'ocr'"):
        converters.implementation("ocr", "tests.extra_converters.faulty_text")
