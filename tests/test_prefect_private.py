"""fileflow/server/prefect_private.py against the installed Prefect: every private name it fences
still exists with the kind and signature used, Prefect still calls the hooks, and no other
module uses a private Prefect name. A Prefect upgrade that renames or removes one fails here."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from prefect.workers.base import BaseJobConfiguration, BaseWorker, BaseWorkerResult

from fileflow.server import prefect_private
from fileflow.server.prefect_private import PRIVATE_NAMES, HookedWorker

ROOT = Path(__file__).resolve().parents[1]

#: the signatures the fence calls or overrides (parameter names, and whether it is a coroutine)
SIGNATURES = {
    "_record_work_pool_snapshot": (["self", "work_pool"], False),
    "_get_scheduled_flow_runs": (["self"], True),
    "_propose_pending_state": (["self", "flow_run"], True),
    "_sync_and_initialize": (["self"], True),
}


class Bare(BaseWorker[BaseJobConfiguration, None, BaseWorkerResult]):
    """Prefect's own worker class with nothing of fileflow's, to read what ``__init__`` sets."""

    type = "fileflow-test-bare"

    async def run(self, flow_run, configuration, task_status=None):  # pragma: no cover - never run
        raise NotImplementedError


def test_the_table_names_every_private_name_the_fence_uses():
    code = ast.parse(inspect.getsource(prefect_private))
    attributes = {n.attr for n in ast.walk(code) if isinstance(n, ast.Attribute) and n.attr.startswith("_")}
    defined = {n.name for n in ast.walk(code) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
               and n.name.startswith("_") and not n.name.startswith("__")}
    assert attributes | defined == set(PRIVATE_NAMES)


@pytest.mark.parametrize("name", sorted(n for n, kind in PRIVATE_NAMES.items() if kind in ("hook", "method")))
def test_private_methods_exist_with_the_signature_used(name):
    method = inspect.getattr_static(BaseWorker, name)
    parameters, coroutine = SIGNATURES[name]
    assert inspect.isfunction(method), f"BaseWorker.{name} is no longer a plain method"
    assert list(inspect.signature(method).parameters) == parameters
    assert inspect.iscoroutinefunction(method) is coroutine


@pytest.mark.parametrize("name", sorted(n for n, kind in PRIVATE_NAMES.items() if kind == "hook"))
def test_prefect_still_calls_the_hooks(name):
    """Overriding a hook Prefect no longer calls would silently do nothing."""
    assert re.search(rf"self\.{name}\b", inspect.getsource(BaseWorker)), f"BaseWorker no longer calls self.{name}"


def test_private_attributes_are_set_by_init_with_the_types_used():
    worker = Bare("a-pool", work_queues=["q"])
    assert worker._work_pool_name == "a-pool"
    assert worker._work_queues == {"q"}
    assert worker._work_pool is None  # until the first sync
    assert worker._limiter is None  # until setup()
    assert worker._submitting_flow_run_ids == set()
    described = [n for n, kind in PRIVATE_NAMES.items() if kind == "attribute"]
    assert all(hasattr(worker, n) for n in described)


def test_setup_creates_the_limiter_and_runs_are_tracked_while_submitted():
    setup = inspect.getsource(BaseWorker.setup)
    assert re.search(r"self\._limiter\s*=\s*\(?\s*anyio\.CapacityLimiter", setup)
    module = inspect.getsource(inspect.getmodule(BaseWorker))
    assert "self._submitting_flow_run_ids.add(" in module and "self._submitting_flow_run_ids.remove(" in module


def test_the_description_is_what_prefect_reports():
    @prefect_private.described("a worker of the test")
    class Described(Bare):
        type = "fileflow-test-described"

    assert isinstance(inspect.getattr_static(BaseWorker, "_description"), str)
    assert Described.get_description() == "a worker of the test"


def test_the_accessors_read_and_write_the_private_state():
    from fileflow.server.worker import WarmWorker

    worker = WarmWorker("a-pool", limit=3)
    assert isinstance(worker, HookedWorker)
    assert (worker.pool_name, worker.queue_names, worker.synced_work_pool, worker.capacity, worker.submitting) == (
        "a-pool", set(), None, None, set())
    marker = object()
    worker.keep_work_pool(marker)
    assert worker.synced_work_pool is marker and worker.work_pool is marker  # Prefect's public property sees it


def test_the_warm_workers_own_names_do_not_shadow_prefects():
    """A name of ours on the subclass that Prefect also uses would replace Prefect's silently."""
    from fileflow.server.worker import WarmWorker

    ours = {n for cls in (WarmWorker, HookedWorker) for n in vars(cls)} - {
        "__module__", "__doc__", "__init__", "__parameters__", "__orig_bases__", "__abstractmethods__", "_abc_impl",
        "__annotations__", "__firstlineno__", "__static_attributes__", "type", "job_configuration", "run",
        "kill_infrastructure", "get_and_submit_flow_runs", "_description", *PRIVATE_NAMES,
    }
    ours |= set(re.findall(r"self\.(\w+)\s*[:=]", inspect.getsource(WarmWorker.__init__)))
    prefects = set(dir(BaseWorker)) | set(vars(Bare("a-pool")))
    assert ours & prefects == set()


def test_no_other_module_uses_a_private_prefect_name():
    fence = ROOT / "fileflow" / "server" / "prefect_private.py"
    found = []
    for package in ("fileflow", "flows", "deployments", "blocks", "converters"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == fence:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
                    found.append(f"{where} .{node.attr}")
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in PRIVATE_NAMES:
                    found.append(f"{where} def {node.name}")
                elif isinstance(node, ast.Name) and node.id in PRIVATE_NAMES:
                    found.append(f"{where} {node.id}")
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prefect") and (
                    any(p.startswith("_") for p in node.module.split("."))
                    or any(a.name.startswith("_") for a in node.names)
                ):
                    found.append(f"{where} from {node.module} import {', '.join(a.name for a in node.names)}")
                elif isinstance(node, ast.keyword) and node.arg in ("_sync",):
                    found.append(f"{where} {node.arg}=")
    assert found == [], "private Prefect names outside fileflow/server/prefect_private.py"
