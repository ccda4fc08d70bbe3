"""Deliberately misbehaving converters: they prove the isolation, never ship in the registry."""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec
from fileflow.errors import CorruptInput


def segfault(payload: Any) -> None:
    ctypes.string_at(0)  # a real SIGSEGV inside a C call


def hang(payload: Any) -> None:
    if payload and payload.get("spawn"):
        child = subprocess.Popen(["sleep", "300"])
        Path(payload["spawn"]).write_text(str(child.pid))
    time.sleep(3600)


def hog(payload: Any) -> int:
    blocks = [bytearray(64 * 1024 * 1024) for _ in range(64)]  # 4 GiB
    return len(blocks)


def corrupt(payload: Any) -> None:
    raise CorruptInput("these bytes are not what they claim")


def slow_start() -> None:
    """A child start that takes longer than the steps' timeouts in the tests."""
    time.sleep(3)


def dead_start() -> None:
    os._exit(3)


def echo(payload: Any) -> dict:
    return {"pid": os.getpid(), "payload": payload}


def counted(payload: Any) -> dict:
    """Appends a line per execution, so a test can count how often a step really ran."""
    with open(payload["counter"], "a") as fh:
        fh.write("x\n")
    return {"pid": os.getpid()}




_prepared: list = []


def slow_prepare(payload: Any) -> None:
    """Stands for a cold converter import: longer than the step's timeout in the tests."""
    time.sleep(payload.get("prepare_s", 2))
    _prepared.append(payload)


def prepared_echo(payload: Any) -> dict:
    """Says whether its ``prepare`` ran before it, in this child."""
    return {"pid": os.getpid(), "prepared": payload in _prepared}


prepared_echo.prepare = slow_prepare


def refusing_prepare(payload: Any) -> None:
    raise CorruptInput("refused before the step started")


def never_run(payload: Any) -> None:
    raise AssertionError("the step ran although its prepare failed")


never_run.prepare = refusing_prepare
