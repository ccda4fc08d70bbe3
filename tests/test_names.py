"""prefect.yaml and the Helm chart spell the Prefect objects' names as fileflow/names.py does."""

from __future__ import annotations

from pathlib import Path

import yaml

import converters
from fileflow import names

ROOT = Path(__file__).resolve().parents[1]


def test_prefect_yaml_uses_the_names_of_fileflow_names():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    router = deployments[names.ROUTER_FLOW]
    assert router["work_pool"]["name"] == names.MEDIATOR_POOL
    assert f"{names.ROUTER_FLOW}/{router['name']}" == names.ROUTER_DEPLOYMENT
    for converter in converters.BUILTINS:
        assert deployments[converter]["work_pool"]["name"] == names.pool_name(converter)
    reprocess = deployments[names.REPROCESS_FLOW]
    assert reprocess["work_pool"] == {"name": names.MEDIATOR_POOL, "work_queue_name": names.REPROCESS_QUEUE}
    k8s = {d["work_pool"]["name"] for d in spec["deployments"]} - {names.MEDIATOR_POOL} - {
        names.pool_name(c) for c in converters.BUILTINS}
    assert k8s == set(names.K8S_POOLS)


def test_the_helm_chart_names_the_mediator_pool_and_converter_pools_alike():
    templates = "\n".join(p.read_text() for p in (ROOT / "helm" / "fileflow" / "templates").glob("*"))
    assert names.MEDIATOR_POOL in templates
    assert "converter-" in templates  # the ScaledJobs' pools: pool_name(<converter>)
