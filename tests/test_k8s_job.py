"""The Kubernetes-job path (pool converter-video-k8s): the Job that Prefect's Kubernetes worker
(prefect-kubernetes) would create for a flow run of `video_transcode-k8s`, rendered by that
worker's own job-configuration code from deployments/k8s-video-job-template.json and the
deployment's job_variables in prefect.yaml, then validated strictly against the Kubernetes
schemas; and its pods fall under the chart's converter NetworkPolicy."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import yaml

from deployments.setup import K8S_POOL_TEMPLATES as K8S_POOLS
from tests.test_helm import K8S_VERSION, MINIMAL, of_kind, render

POOL = "converter-video-k8s"
ROOT = Path(__file__).resolve().parents[1]


def _job_variables() -> dict:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "video_transcode-k8s")
    return deployment["work_pool"]["job_variables"]


def _rendered_job(overrides: dict | None = None) -> dict:
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

    template = K8S_POOLS[POOL]
    # what the worker does with a pool's base job template and a deployment's job variables
    values = {**_job_variables(), "env": {"FILEFLOW_STORAGE_BUCKET": "acme-fileflow",
                                          "PREFECT_API_URL": "http://prefect-server.prefect:4200/api"},
              **(overrides or {})}
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        template, values))
    flow_run = FlowRun(id=uuid.uuid4(), name="bright-otter", flow_id=uuid.uuid4(), deployment_id=uuid.uuid4())
    config.prepare_for_flow_run(flow_run, worker_name="video-k8s-worker")
    assert KubernetesWorker.job_configuration is KubernetesWorkerJobConfiguration
    return config.job_manifest


def test_the_kubernetes_workers_job_for_a_flow_run_is_strictly_valid(prefect_server):
    import kubernetes_validate

    job = _rendered_job()
    manifest = {**job, "metadata": {**job["metadata"], "name": "video-transcode-x"}}  # generateName is the API's
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert "parallelism" not in pod and "completions" not in pod
    assert (job["spec"]["parallelism"], job["spec"]["completions"], job["spec"]["backoffLimit"]) == (1, 1, 0)
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    # the flow run the worker prepared the job for, and what fileflow's template adds
    assert "PREFECT__FLOW_RUN_ID" in env and env["FILEFLOW_STORAGE_BUCKET"]["value"] == "acme-fileflow"
    assert env["FILEFLOW_STORAGE_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "fileflow-s3"
    assert container["resources"]["limits"]["memory"] == "4608Mi"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["ttlSecondsAfterFinished"] == 300


def test_a_broken_template_fails_the_strict_validation(prefect_server):
    """The check is not a rubber stamp: the old template's parallelism inside the PodSpec fails."""
    import kubernetes_validate

    job = _rendered_job()
    job["spec"]["template"]["spec"]["parallelism"] = 1
    manifest = {**job, "metadata": {**job["metadata"], "name": "video-transcode-x"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_the_jobs_pods_fall_under_the_charts_converter_network_policy(prefect_server):
    policies = of_kind(render(MINIMAL), "NetworkPolicy")
    (converter_policy,) = [p for n, p in policies.items() if n.endswith("-converter")]
    selector = converter_policy["spec"]["podSelector"]["matchLabels"]
    # the job variable release_name set to the chart's release, as the README says
    labels = _rendered_job({"release_name": selector["app.kubernetes.io/instance"]})["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in selector.items()), (selector, labels)
    # and with the template's default, for a release installed as `helm install fileflow`
    default = K8S_POOLS[POOL]["variables"]["properties"]["release_name"]["default"]
    assert default == "fileflow"


def test_the_storage_secret_is_the_one_the_readme_creates():
    readme = (ROOT / "helm" / "fileflow" / "README.md").read_text()
    default = K8S_POOLS[POOL]["variables"]["properties"]["storage_secret"]["default"]
    assert f"create secret generic {default}" in readme
