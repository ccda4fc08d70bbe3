"""The Helm chart (helm/fileflow), rendered and linted in-process by helm-python-sdk (Helm v4's Go
SDK through ctypes, no helm binary, no cluster), every manifest validated against Kubernetes'
schemas (kubernetes-validate, offline) and KEDA objects against schemas written from KEDA's
documentation (tests/keda/). Also the images' Dockerfile and the Kubernetes work pool of
prefect.yaml."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import helm_python as helm  # helm-python-sdk (dev dependency): Helm v4's Go SDK in-process
import pytest
import yaml

import converters

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "fileflow"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
KEDA_SCHEMAS = Path(__file__).parent / "keda"
K8S_VERSION = "1.33.0"
RELEASE, NAMESPACE = "ff", "media"
MINIMAL = {"storage": {"bucket": "acme-fileflow"}, "uploadApi": {"tokens": {"existingSecret": "fileflow-upload-api"}}}



def _load_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def render(values: dict) -> list[dict]:
    """Every object the chart renders with these values (hooks included), parsed."""
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(files.items()):
        if not path.endswith(".yaml"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


@pytest.fixture(scope="module")
def default_objects() -> list[dict]:
    return render(MINIMAL)


@pytest.fixture(scope="module")
def full_values() -> dict:
    return yaml.safe_load(FULL_VALUES.read_text())


@pytest.fixture(scope="module")
def full_objects(full_values) -> list[dict]:
    return render(full_values)


def of_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            specs.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
        elif o["kind"] == "ScaledJob":
            specs.append((o["metadata"]["name"], o["spec"]["jobTargetRef"]["template"]["spec"]))
    return specs


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# -- values, schema, lint ---------------------------------------------------------------------------


def test_values_list_exactly_the_registry_converters():
    assert list(_load_values()["converters"]) == list(converters.BUILTINS)
    assert list(yaml.safe_load(FULL_VALUES.read_text())["converters"]) == list(converters.BUILTINS)


FREE_FORM = {"resources", "labels", "annotations", "namespaceSelector", "podSelector", "commonLabels", "digests"}


def test_every_value_has_a_doc_comment():
    """helm-docs style: a `# --` line right above every value and every converter; keys inside
    a documented free-form map (resources, labels, selectors) belong to that map's comment."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented, stack = [], []  # stack of (indent, key)
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_./-]+):(.*)$", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        stack = [(d, k) for d, k in stack if d < indent]
        inside_free_form = any(k in FREE_FORM for _, k in stack)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        is_parent = m.group(3).strip() == "" and len(nxt) - len(nxt.lstrip()) > indent and not nxt.lstrip().startswith("- ")
        is_converter = stack == [(0, "converters")]
        documented = lines[i - 1].lstrip().startswith("# --")
        if not inside_free_form and (not is_parent or is_converter) and not documented:
            undocumented.append(line.strip())
        stack.append((indent, key))
    assert undocumented == []


def test_schema_descriptions_are_the_values_comments():
    """values.schema.json says what values.yaml's `# --` comments say, key by key."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    comments, stack = {}, []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_./-]+):", line)
        if not m:
            continue
        stack = [(d, k) for d, k in stack if d < len(m.group(1))] + [(len(m.group(1)), m.group(2))]
        if lines[i - 1].lstrip().startswith("# --") and not any(k in FREE_FORM for _, k in stack[:-1]):
            comments[tuple(k for _, k in stack)] = lines[i - 1].split("# --", 1)[1].strip()
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, text in comments.items():
        node = schema
        for key in path:
            node = node["properties"][key]
        assert node.get("description") == text, path


def test_schema_forbids_unknown_keys_everywhere():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node, path):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}")

    walk(schema, "values")


@pytest.mark.parametrize(
    "values, where",
    [
        ({"storage": {"bucket": "acme-fileflow", "bukcet": "x"}}, "bukcet"),
        ({**MINIMAL, "converters": {"ocr": {"maxReplicas": 3}}}, "maxReplicas"),
        ({**MINIMAL, "converters": {"orc": {"enabled": True}}}, "orc"),
        ({**MINIMAL, "mediator": {"autoscaling": {"minReplicas": 2}}}, "minReplicas"),
        ({"storage": {"bucket": "acme-fileflow", "credentials": {"secretAccessKey": "plain"}}}, "secretAccessKey"),
        ({**MINIMAL, "converters": {"ocr": {"image": "ocr-latest"}}}, "image"),
        ({**MINIMAL, "securityContext": {"runAsUser": 0}}, "runAsUser"),
        ({**MINIMAL, "resumer": {"everySecond": 5}}, "everySecond"),
        ({**MINIMAL, "callbacks": {"secret": "plain"}}, "secret"),
        ({**MINIMAL, "notify": {"webhookUrl": "uploads.acme/hook"}}, "webhookUrl"),
        ({**MINIMAL, "s3Events": {"uploadsPrefix": "uploads/"}}, "uploadsPrefix"),
        ({**MINIMAL, "mediator": {"terminationGracePeriodSeconds": 10}}, "terminationGracePeriodSeconds"),
        ({**MINIMAL, "converterModules": {"office_pdf": "not a module"}}, "converterModules"),
    ],
)
def test_schema_refuses_misspelt_and_unsafe_values(values, where):
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError, match=where):
            chart.validate_schema(values)


def test_default_values_ask_for_the_bucket_by_name():
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmRenderError, match="storage.bucket is required"):
            chart.render({}, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("values_file", [None, FULL_VALUES], ids=["defaults", "full"])
def test_lint_is_clean(values_file):
    values = yaml.safe_load(values_file.read_text()) if values_file else MINIMAL
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=K8S_VERSION)
    assert report["errors"] == []
    # severity 1 is INFO (e.g. "icon is recommended"); nothing at WARNING (2) or ERROR (3)
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


# -- manifests are valid ----------------------------------------------------------------------------


def _keda_validator(name: str):
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry()
    for path in KEDA_SCHEMAS.glob("*.schema.json"):
        registry = registry.with_resource(path.name, Resource.from_contents(json.loads(path.read_text())))
    schema = json.loads((KEDA_SCHEMAS / name).read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _monitoring_validator(name: str):
    import jsonschema

    schema = json.loads((Path(__file__).parent / "monitoring" / name).read_text())
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("which", ["default_objects", "full_objects"])
def test_every_manifest_is_valid(which, request):
    import kubernetes_validate

    objects = request.getfixturevalue(which)
    validators = {"ScaledJob": _keda_validator("scaledjob.schema.json"),
                  "ScaledObject": _keda_validator("scaledobject.schema.json"),
                  "ServiceMonitor": _monitoring_validator("servicemonitor.schema.json"),
                  "PrometheusRule": _monitoring_validator("prometheusrule.schema.json")}
    kinds = set()
    for obj in objects:
        kinds.add(obj["kind"])
        if obj["kind"] in validators:
            errors = [e.message for e in validators[obj["kind"]].iter_errors(obj)]
            assert errors == [], (obj["metadata"]["name"], errors)
            if obj["kind"] == "ScaledJob":  # the job KEDA will create, as Kubernetes sees it
                job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
                       "spec": obj["spec"]["jobTargetRef"]}
                kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert {"Deployment", "Service", "ScaledJob", "ScaledObject", "Job", "NetworkPolicy",
            "PodDisruptionBudget", "ServiceAccount", "ConfigMap"} <= kinds


def test_keda_schema_catches_a_misspelt_field(default_objects):
    """The KEDA schemas are not a rubber stamp: a misspelt field fails them."""
    scaled_job = dict(next(iter(of_kind(default_objects, "ScaledJob").values())))
    scaled_job["spec"] = {**scaled_job["spec"], "maxReplicas": 3}
    assert list(_keda_validator("scaledjob.schema.json").iter_errors(scaled_job))


# -- what matters -----------------------------------------------------------------------------------


def _check_scaled_jobs(objects: list[dict], values: dict, fullname: str):
    scaled_jobs = of_kind(objects, "ScaledJob")
    enabled = [n for n, c in values["converters"].items() if c["enabled"]]
    by_converter = {o["metadata"]["labels"]["fileflow.io/converter"]: o for o in scaled_jobs.values()}
    assert sorted(by_converter) == sorted(n.replace("_", "-") for n in enabled)
    service = of_kind(objects, "Service")[f"{fullname}-exporter"]
    port = service["spec"]["ports"][0]["port"]
    exporter_url = f"http://{fullname}-exporter.{NAMESPACE}.svc.cluster.local:{port}"
    for name in enabled:
        c = values["converters"][name]
        sj = by_converter[name.replace("_", "-")]
        spec = sj["spec"]
        pod = spec["jobTargetRef"]["template"]["spec"]
        (container,) = pod["containers"]
        argv = container["command"] + container["args"]
        worker = argv[argv.index("prefect"):]
        assert worker[:3] == ["prefect", "worker", "start"]
        assert worker[worker.index("--pool") + 1] == f"converter-{name}"
        assert "--run-once" in worker and worker[worker.index("--limit") + 1] == "1"
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "metrics-api"
        assert trigger["metadata"] == {
            "url": f"{exporter_url}/pools/converter-{name}",
            "format": "json",
            "valueLocation": "pending",
            "targetValue": str(c["targetPendingPerPod"]),
        }
        assert spec["scalingStrategy"] == {"strategy": "default"}
        assert spec["rollout"]["strategy"] == "gradual"
        assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"]) == (
            c["minReplicaCount"], c["maxReplicaCount"], c["pollingInterval"])
        job = spec["jobTargetRef"]
        assert job["backoffLimit"] == 0 and job["parallelism"] == 1 and job["completions"] == 1
        assert job["activeDeadlineSeconds"] == c["activeDeadlineSeconds"]
        assert job["ttlSecondsAfterFinished"] == c["ttlSecondsAfterFinished"]
        assert pod["terminationGracePeriodSeconds"] == c["terminationGracePeriodSeconds"]
        assert pod["restartPolicy"] == "Never"
        assert container["resources"] == c["resources"]
        assert f"/{c['image']}" in container["image"]
        scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
        assert scratch["emptyDir"]["sizeLimit"] == c["scratchSizeLimit"]
        paused = (sj["metadata"].get("annotations") or {}).get("autoscaling.keda.sh/paused")
        assert paused == ("true" if c["paused"] else None)


def test_one_scaled_job_per_enabled_converter_on_its_pool_and_the_exporter(default_objects, full_objects, full_values):
    defaults = _load_values()
    _check_scaled_jobs(default_objects, defaults, f"{RELEASE}-fileflow")
    _check_scaled_jobs(full_objects, full_values, "fileflow-prod")
    assert len(of_kind(full_objects, "ScaledJob")) == len(converters.BUILTINS)


def test_mediator_scaled_by_keda_on_the_exporter_and_placement_follows_the_scaled_jobs(full_objects, full_values):
    (so,) = of_kind(full_objects, "ScaledObject").values()
    deployment = of_kind(full_objects, "Deployment")["fileflow-prod-mediator"]
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fileflow-prod-mediator"}
    assert "replicas" not in deployment["spec"]  # KEDA owns the replica count
    (trigger,) = so["spec"]["triggers"]
    assert trigger["metadata"]["url"] == "http://fileflow-prod-exporter.media.svc.cluster.local:9465/pools/fileflow-mediator"
    assert trigger["metadata"]["targetValue"] == str(full_values["mediator"]["runsPerPod"])
    auto = full_values["mediator"]["autoscaling"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (auto["minReplicaCount"], auto["maxReplicaCount"])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--limit") + 1] == str(full_values["mediator"]["runsPerPod"])
    assert container["resources"] == full_values["mediator"]["resources"]
    assert "/ocr:" in container["image"]

    pdb = of_kind(full_objects, "PodDisruptionBudget")["fileflow-prod-mediator"]
    assert pdb["spec"]["maxUnavailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("which, values", [("default_objects", None), ("full_objects", FULL_VALUES)])
def test_mediator_runs_the_warm_worker_with_its_health_endpoint_as_the_probe(which, values, request):
    m = (yaml.safe_load(values.read_text()) if values else _load_values())["mediator"]
    deployment = next(d for n, d in of_kind(request.getfixturevalue(which), "Deployment").items()
                      if n.endswith("-mediator"))
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    argv = container["args"]
    assert argv[:3] == ["python", "-m", "fileflow.server.worker"]
    assert "--keep-alive" not in argv  # the kubelet restarts the container
    assert argv[argv.index("--pool") + 1] == "fileflow-mediator"
    assert argv[argv.index("--limit") + 1] == str(m["runsPerPod"])
    grace = float(argv[argv.index("--grace") + 1])
    assert 0 < grace < pod["terminationGracePeriodSeconds"] == m["terminationGracePeriodSeconds"]
    (port,) = [p for p in container["ports"] if p["name"] == container["livenessProbe"]["httpGet"]["port"]]
    assert argv[argv.index("--health-port") + 1] == str(port["containerPort"])
    assert not {"PREFECT_WORKER_WEBSERVER_PORT", "PREFECT_WORKER_WEBSERVER_HOST"} & set(env_of(container))


def test_resumer_runs_once_in_the_mediator_image_and_can_be_disabled(default_objects, full_objects, full_values):
    resumer = of_kind(full_objects, "Deployment")["fileflow-prod-resumer"]
    assert resumer["spec"]["replicas"] == 1
    (container,) = resumer["spec"]["template"]["spec"]["containers"]
    r = full_values["resumer"]
    assert container["args"] == ["python", "-m", "fileflow.server.resumer", "--every", str(r["everySeconds"]),
                                    "--settle", str(r["settleSeconds"])]
    mediator = of_kind(full_objects, "Deployment")["fileflow-prod-mediator"]["spec"]["template"]["spec"]
    assert container["image"] == mediator["containers"][0]["image"]
    assert container["resources"] == r["resources"]
    policy = of_kind(full_objects, "NetworkPolicy")["fileflow-prod-resumer"]["spec"]
    assert policy["podSelector"]["matchLabels"]["fileflow.io/role"] == "resumer"
    # DNS, the Prefect API and storage (the failed manifest of a run past the resume cap)
    assert policy["ingress"] == [] and len(policy["egress"]) == 3
    assert policy["egress"][2] == of_kind(full_objects, "NetworkPolicy")["fileflow-prod-converter"]["spec"]["egress"][2]
    assert f"{RELEASE}-fileflow-resumer" in of_kind(default_objects, "Deployment")  # on by default

    disabled = render({**MINIMAL, "resumer": {"enabled": False}})
    assert not any(o["metadata"]["name"].endswith("-resumer") for o in disabled)


def _env(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_deliverer_runs_once_with_its_secret_and_reaches_the_receivers(default_objects, full_objects, full_values):
    deliverer = of_kind(full_objects, "Deployment")["fileflow-prod-deliverer"]
    assert deliverer["spec"]["replicas"] == 1 and deliverer["spec"]["strategy"]["type"] == "Recreate"
    (container,) = deliverer["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["python", "-m", "fileflow.server.deliverer"]
    env = _env(container)
    c = full_values["callbacks"]
    assert env["FILEFLOW_CALLBACK_SECRET"] == {"secretKeyRef": {"name": c["existingSecret"], "key": c["secretKey"]}}
    assert env["FILEFLOW_CALLBACK_RETRY_WINDOW_S"] == str(c["retryWindowSeconds"])
    assert env["FILEFLOW_NOTIFY_WEBHOOK_URL"] == full_values["notify"]["webhookUrl"]
    assert env["FILEFLOW_NOTIFY_WEBHOOK_HEADERS"] == {"secretKeyRef": {"name": "fileflow-notify", "key": "headers"}}
    # the mediators enqueue the webhook: they get its URL and events, never the HMAC secret
    (mediator,) = of_kind(full_objects, "Deployment")["fileflow-prod-mediator"]["spec"]["template"]["spec"]["containers"]
    assert _env(mediator)["FILEFLOW_NOTIFY_EVENTS"] == '["fileflow.file.failed"]'
    assert "FILEFLOW_CALLBACK_SECRET" not in _env(mediator)
    policy = of_kind(full_objects, "NetworkPolicy")["fileflow-prod-deliverer"]["spec"]
    assert policy["ingress"] == [] and policy["podSelector"]["matchLabels"]["fileflow.io/role"] == "deliverer"
    assert {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8443}]} in policy["egress"]
    default = of_kind(default_objects, "Deployment")[f"{RELEASE}-fileflow-deliverer"]  # on by default, unsigned
    assert "FILEFLOW_CALLBACK_SECRET" not in _env(default["spec"]["template"]["spec"]["containers"][0])


def test_s3_events_consumer_is_off_by_default_and_needs_its_queue(default_objects, full_objects, full_values):
    assert f"{RELEASE}-fileflow-s3-events" not in of_kind(default_objects, "Deployment")
    consumer = of_kind(full_objects, "Deployment")["fileflow-prod-s3-events"]
    assert consumer["spec"]["replicas"] == 2
    (container,) = consumer["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["python", "-m", "fileflow.server.s3_events"]
    env = _env(container)
    assert env["FILEFLOW_S3_EVENTS_QUEUE_URL"] == full_values["s3Events"]["queueUrl"]
    assert env["FILEFLOW_S3_EVENTS_UPLOADS_PREFIX"] == "incoming/" and env["FILEFLOW_STORAGE_KIND"] == "s3"
    assert of_kind(full_objects, "NetworkPolicy")["fileflow-prod-s3-events"]["spec"]["ingress"] == []
    with pytest.raises(Exception, match="s3Events.queueUrl is required"):
        render({**MINIMAL, "s3Events": {"enabled": True}})


def test_every_pod_gets_the_client_retries_and_converter_pods_the_converter_modules(default_objects, full_objects):
    for name, pod in pod_specs(default_objects):
        env = env_of(pod["containers"][0])
        assert env["PREFECT_CLIENT_MAX_RETRIES"]["value"] == "8", name
        assert "FILEFLOW_CONVERTER_MODULES" not in env, name  # empty: not set at all
    runs_converters = {"fileflow-prod-mediator"} | set(of_kind(full_objects, "ScaledJob"))
    for name, pod in pod_specs(full_objects):
        env = env_of(pod["containers"][0])
        assert env["PREFECT_CLIENT_MAX_RETRIES"]["value"] == "6", name
        if name in runs_converters:
            assert json.loads(env["FILEFLOW_CONVERTER_MODULES"]["value"]) == {"office_pdf": "hotfix.office_pdf"}, name
        else:
            assert "FILEFLOW_CONVERTER_MODULES" not in env, name
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmRenderError, match="converterModules.officepdf: no such converter"):
            chart.render({**MINIMAL, "converterModules": {"officepdf": "hotfix.office_pdf"}},
                         name=RELEASE, namespace=NAMESPACE)


def test_placement_sends_enabled_converters_to_their_pools(default_objects):
    deployment = of_kind(default_objects, "Deployment")[f"{RELEASE}-fileflow-mediator"]
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    placement = json.loads(env["FILEFLOW_PLACEMENT"]["value"])
    values = _load_values()["converters"]
    assert placement == {n: ("pool" if c["enabled"] else "local") for n, c in values.items()}
    assert env["FILEFLOW_DEFAULT_PLACEMENT"]["value"] == "local"
    # the chart's default is the design's, the one `fileflow up` gives its processes
    assert {n for n, where in placement.items() if where == "pool"} == set(converters.ON_POOLS)
    assert {n: where for n, where in placement.items() if where == "local"} == converters.design_placement()
    assert "replicas" not in deployment["spec"]


def test_converters_left_in_the_mediator_need_nothing_the_mediator_image_lacks():
    """A converter without a pool of its own runs in the mediator pod, whose image (docker/Dockerfile
    `mediator`) holds what the `base` image holds and no more: no Tesseract, LibreOffice or ffmpeg."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "FROM runtime AS mediator" in dockerfile and "FROM runtime AS base" in dockerfile
    local = {n: c["image"] for n, c in _load_values()["converters"].items() if not c["enabled"]}
    assert local and all(image == "base" for image in local.values()), local


def test_placement_overrides_win_and_name_real_converters():
    values = {**MINIMAL, "converters": {"video_transcode": {**_load_values()["converters"]["video_transcode"], "enabled": False}},
              "mediator": {"placementOverrides": {"video_transcode": "pool"}}}
    objects = render(values)
    deployment = of_kind(objects, "Deployment")[f"{RELEASE}-fileflow-mediator"]
    placement = json.loads(env_of(deployment["spec"]["template"]["spec"]["containers"][0])["FILEFLOW_PLACEMENT"]["value"])
    assert placement["video_transcode"] == "pool"  # served by the Kubernetes pool's worker, no ScaledJob
    assert not any(o["metadata"]["name"].endswith("-video-transcode") for o in of_kind(objects, "ScaledJob").values())
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmRenderError, match="no such converter"):
            chart.render({**MINIMAL, "mediator": {"placementOverrides": {"videotranscode": "pool"}}},
                         name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("which", ["default_objects", "full_objects"])
def test_every_pod_is_locked_down(which, request):
    objects = request.getfixturevalue(which)
    specs = pod_specs(objects)
    assert len(specs) >= 4
    assert any(name.endswith("-resumer") for name, _ in specs)
    for name, pod in specs:
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"] and "emptyDir" in volumes["scratch"], name
        for container in pod["containers"]:
            csc = container["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True, name
            assert csc["allowPrivilegeEscalation"] is False, name
            assert csc["capabilities"] == {"drop": ["ALL"]}, name
            assert csc["runAsUser"] > 0 and csc["runAsNonRoot"] is True, name
            assert csc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/tmp", "/scratch"} <= mounts, name
            assert "resources" in container and container["resources"]["limits"]["memory"], name
            if which == "full_objects":
                assert csc["runAsUser"] == 20001


def test_no_secret_value_in_plain_text(full_objects, default_objects):
    """Credentials come only from existing Secrets (by reference) or from the service account."""
    assert not of_kind(full_objects, "Secret") and not of_kind(default_objects, "Secret")
    secret_refs = {"PREFECT_API_URL": ("prefect-connection", "api-url"),
                   "PREFECT_API_AUTH_STRING": ("prefect-connection", "auth-string"),
                   "FILEFLOW_STORAGE_ACCESS_KEY_ID": ("fileflow-s3", "AWS_ACCESS_KEY_ID"),
                   "FILEFLOW_STORAGE_SECRET_ACCESS_KEY": ("fileflow-s3", "AWS_SECRET_ACCESS_KEY")}
    for name, pod in pod_specs(full_objects):
        for container in pod["containers"]:
            env = env_of(container)
            for var, (secret, key) in secret_refs.items():
                assert "value" not in env[var], (name, var)
                assert env[var]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}, (name, var)
            for var in env:
                if re.search(r"SECRET|PASSWORD|TOKEN|AUTH|KEY", var):
                    assert "valueFrom" in env[var], (name, var)
    # defaults: no keys at all (the service account's identity is used), and the IRSA annotation
    # of the full values lands on the service account
    for name, pod in pod_specs(default_objects):
        env = env_of(pod["containers"][0])
        assert not {"FILEFLOW_STORAGE_ACCESS_KEY_ID", "FILEFLOW_STORAGE_SECRET_ACCESS_KEY", "PREFECT_API_AUTH_STRING"} & set(env)
        assert pod["serviceAccountName"] == f"{RELEASE}-fileflow"
    sa = of_kind(full_objects, "ServiceAccount")["fileflow-runner"]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert all(pod["serviceAccountName"] == "fileflow-runner" for _, pod in pod_specs(full_objects))


def test_converter_pods_reach_only_dns_the_prefect_api_and_storage(full_objects, full_values):
    policy = of_kind(full_objects, "NetworkPolicy")["fileflow-prod-converter"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    assert spec["podSelector"]["matchLabels"]["fileflow.io/role"] == "converter"
    for sj in of_kind(full_objects, "ScaledJob").values():
        assert sj["spec"]["jobTargetRef"]["template"]["metadata"]["labels"]["fileflow.io/role"] == "converter"
    dns, api, storage = spec["egress"]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "coredns"}
    assert {p["port"] for p in dns["ports"]} == {53}
    assert api["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "prefect-prod"}
    assert api["ports"] == [{"protocol": "TCP", "port": 4200}]
    assert [t["ipBlock"]["cidr"] for t in storage["to"]] == full_values["networkPolicy"]["storage"]["cidrs"]
    assert storage["to"][0]["ipBlock"]["except"] == ["52.219.1.0/24"]
    assert storage["ports"] == [{"protocol": "TCP", "port": 443}]
    exporter = of_kind(full_objects, "NetworkPolicy")["fileflow-prod-exporter"]["spec"]
    assert len(exporter["egress"]) == 2  # DNS and the Prefect API, no storage
    assert exporter["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9465}]


def test_hook_jobs_prepare_the_bucket_then_apply_the_deployments(full_objects):
    jobs = of_kind(full_objects, "Job")
    bucket, setup = jobs["fileflow-prod-prepare-bucket"], jobs["fileflow-prod-setup"]
    assert bucket["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "fileflow", "storage", "prepare-bucket", "--tmp-days", "2"]
    assert setup["spec"]["template"]["spec"]["containers"][0]["args"] == ["python", "-m", "deployments.setup"]
    weights = [int(j["metadata"]["annotations"]["helm.sh/hook-weight"]) for j in (bucket, setup)]
    assert weights[0] < weights[1]
    env = env_of(bucket["spec"]["template"]["spec"]["containers"][0])
    assert env["FILEFLOW_STORAGE_BUCKET"]["value"] == "acme-fileflow-prod"
    assert env["FILEFLOW_STORAGE_PREFIX"]["value"] == "uploads"


def test_grafana_dashboard_configmap(default_objects):
    (cm,) = of_kind(default_objects, "ConfigMap").values()
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["fileflow.json"])
    assert dashboard == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = set(re.findall(r"fileflow_[a-z_]+", exprs))
    exposed = _exporter_series()
    assert used <= exposed, used - exposed  # the dashboard asks only for series the exporter serves
    per_pool = {n for n in exposed if n.startswith("fileflow_pool_")} | {"fileflow_active_mediator_runs"}
    assert per_pool <= used  # and shows every figure of the pools


def _exporter_series() -> set[str]:
    """Every sample name the exporter's /metrics serves, read back from its own exposition."""
    from datetime import datetime, timezone

    from prometheus_client.parser import text_string_to_metric_families

    from fileflow.engine.events import FAILED
    from fileflow.server.exporter import PoolFigures, Snapshot, metrics_registry, render_metrics
    from fileflow.server.file_metrics import FileEventCounters

    counters = FileEventCounters()
    steps = [{"name": "ocr", "status": "completed", "duration_s": 1.0}]
    counters.count("e", FAILED, datetime.now(timezone.utc), {"kind": "pdf", "error": {"type": "X"}, "steps": steps})
    snap = Snapshot(pools={"p": PoolFigures("p", 1, 1, False)}, mediator_pool="p", scrape_seconds=0.1,
                    taken_at=0.0, files=counters.figures())
    text = render_metrics(metrics_registry(lambda: snap))
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_scaled_job_pod_lets_its_step_finish_on_sigterm(default_objects, tmp_path):
    """The ScaledJob pod's PID 1 (the chart's shell wrapper) takes an eviction's SIGTERM and
    waits for the worker, which never sees the signal; the worker's exit status is the pod's.
    The worker here is a stand-in command that records any SIGTERM it receives."""
    sj = next(iter(of_kind(default_objects, "ScaledJob").values()))
    container = sj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
    # tini is PID 1 (forwards the SIGTERM to the shell, reaps zombies); the shell is run here
    assert container["command"][:4] == ["/usr/bin/tini", "--", "/bin/sh", "-c"]
    script, arg0 = container["command"][4], container["command"][5]
    ready, go, hit = tmp_path / "ready", tmp_path / "go", tmp_path / "sigterm"
    worker = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(hit)!r}).touch(), sys.exit(143)))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.02)\n"
        "sys.exit(7)\n"
    )
    proc = subprocess.Popen(["/bin/sh", "-c", script, arg0, sys.executable, "-c", worker],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # what the kubelet sends PID 1 on eviction
        proc.send_signal(signal.SIGTERM)
        go.touch()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 7
    assert not hit.exists()
    assert "SIGTERM received" in out


# -- images -----------------------------------------------------------------------------------------


def _dockerfile_stages() -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    """(ARG defaults, instructions per stage, FROM of each stage) of docker/Dockerfile."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    args, stages, parents, current = {}, {}, {}, None
    for line in (l.strip() for l in logical.splitlines() if l.strip()):
        op, _, rest = line.partition(" ")
        if op.upper() == "ARG" and current is None and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
        elif op.upper() == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.I)
            assert m, line
            current = m.group(2)
            parents[current] = m.group(1)
            stages[current] = []
        elif current is not None:
            stages[current].append(line)
    return args, stages, parents


def test_dockerfile_images_are_pinned_non_root_and_carry_their_packages():
    args, stages, parents = _dockerfile_stages()
    flavours = {"mediator", "base", "ocr", "office", "video"}
    assert flavours <= set(stages)
    for stage, parent in parents.items():
        if parent in stages:
            continue
        ref = args.get(parent.strip("${}"), parent)
        assert re.search(r"@sha256:[0-9a-f]{64}$|:\d+(\.\d+)+(-[a-z0-9]+)?$", ref), f"{stage}: base {ref} is not pinned"
    for flavour in flavours:
        users = [l.split()[1] for l in stages[flavour] if l.upper().startswith("USER ")]
        assert users, f"{flavour} sets no USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{flavour} runs as {users[-1]}"

    def packages(stage: str) -> set[str]:
        found = set()
        while stage in stages:
            for line in stages[stage]:
                if "apt-get install" in line:
                    found |= {w for w in line.split("--no-install-recommends", 1)[1].split("&&")[0].split()}
            stage = parents[stage]
        return found

    assert {"libmagic1", "python3"} <= packages("base")
    assert {"tesseract-ocr", "tesseract-ocr-eng", "tesseract-ocr-deu"} <= packages("ocr")
    assert {"python3-uno", "libreoffice-writer-nogui"} <= packages("office")
    assert "ffmpeg" in packages("video") and "ffmpeg" not in packages("base")
    assert "tesseract-ocr" not in packages("office") | packages("video") | packages("mediator")
    build = " ".join(stages["build"])
    assert "uv sync --frozen --no-dev" in build.replace("/opt/uv/bin/", "")
    # tini (Debian's) is PID 1 of every image, and the images share one runtime stage
    assert "tini" in packages("runtime")
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in stages["runtime"]
    assert all(parents[f] == "runtime" for f in flavours)

    values = _load_values()
    used = {c["image"] for c in values["converters"].values()} | {values["mediator"]["image"], values["exporter"]["image"]}
    assert used <= flavours


# -- the Kubernetes work pool of prefect.yaml -----------------------------------------------------------


def test_prefect_yaml_has_a_kubernetes_pool_for_video_transcode():
    from deployments.setup import K8S_POOL_TEMPLATES

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "video_transcode-k8s")
    assert deployment["entrypoint"] == "flows/step.py:converter_step"
    assert deployment["work_pool"]["name"] == "converter-video-k8s"
    template = K8S_POOL_TEMPLATES["converter-video-k8s"]
    job = template["job_configuration"]["job_manifest"]
    assert job["kind"] == "Job" and job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == "{{ finished_job_ttl }}"
    assert template["variables"]["properties"]["finished_job_ttl"]["default"] > 0
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "{{ memory_limit }}"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


# -- the scaling simulation reads the chart's values ------------------------------------------------


def test_scaling_simulation_uses_the_chart_values_and_respects_them(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import scaling
    finally:
        sys.path.remove(str(ROOT / "bench"))
    values = _load_values()
    report = scaling.main(["--load", "peaked-250k", "--files", "3000", "--set", "ocr.maxReplicaCount=3",
                           "--json", str(tmp_path / "r.json")])
    enabled = {f"converter-{n}": c for n, c in values["converters"].items() if c["enabled"]}
    assert set(report["pools"]) == set(enabled)
    for pool, figures in report["pools"].items():
        cap = 3 if pool == "converter-ocr" else enabled[pool]["maxReplicaCount"]
        assert figures["max"] == cap and figures["peak_pods"] <= cap
        assert (figures["peak_pods"] > 0) == (figures["steps"] > 0), pool  # a pool with work scales up
    # the simulation's mix of kinds has no audio: every other pool had work
    assert {p for p, f in report["pools"].items() if f["steps"] == 0} == {"converter-audio_transcode"}
    assert report["pools"]["converter-ocr"]["peak_pods"] == 3  # the cap binds: 3 jobs for many OCR steps
    assert report["mediator"]["peak_pods"] <= values["mediator"]["autoscaling"]["maxReplicaCount"]
    # every file finished, and the steps add up to the mix of kinds
    assert sum(report["latency_by_arrival_hour"][h]["files"] for h in report["latency_by_arrival_hour"]) == 3000
    assert json.loads((tmp_path / "r.json").read_text())["files"] == 3000


def test_every_pod_heartbeats_as_often_as_the_crash_automation_expects(default_objects):
    """The setup hook creates the automation that crashes silent runs: every pod that runs flows
    (and the hook itself) must agree with it on the heartbeat interval and the window."""
    specs = pod_specs(default_objects)
    for name, pod in specs:
        env = env_of(pod["containers"][0])
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]["value"] == "30", name
        assert env["FILEFLOW_LIVENESS_HEARTBEAT_S"]["value"] == "30", name
        assert env["FILEFLOW_LIVENESS_CRASHED_AFTER_S"]["value"] == "90", name
        assert env["FILEFLOW_LIVENESS_PENDING_AFTER_S"]["value"] == "300", name
    with pytest.raises(Exception, match="at least twice"):
        render({**MINIMAL, "prefect": {"heartbeatSeconds": 60, "crashedAfterSeconds": 90}})


# -- limits that follow the cluster (issue 21) ------------------------------------------------------


def _setup_limits(objects: list[dict]) -> dict:
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].endswith("-setup"))
    return json.loads(env_of(job["spec"]["template"]["spec"]["containers"][0])["FILEFLOW_SETUP_LIMITS"]["value"])


def test_setup_limits_never_cap_below_what_keda_can_scale_to(default_objects, full_objects, full_values):
    from deployments.setup import limit_specs

    values = _load_values()
    for objects, vals in ((default_objects, values), (full_objects, full_values)):
        limits = _setup_limits(objects)
        assert limits["fileflow-active-files"] is None  # no cap by default
        scaled_jobs = {sj["spec"]["triggers"][0]["metadata"]["url"].rsplit("/", 1)[1]: sj
                       for sj in of_kind(objects, "ScaledJob").values()}
        for name, conf in vals["converters"].items():
            cap = limits[f"fileflow-converter-{name}"]
            if conf["enabled"]:
                sj = scaled_jobs[f"converter-{name}"]
                # exactly what KEDA may run at once: the mediator's slots never hold pods back
                assert cap == sj["spec"]["maxReplicaCount"] * conf["targetPendingPerPod"], name
            else:
                assert cap is None, name
        specs = {s.name: s.limit for s in limit_specs({"FILEFLOW_SETUP_LIMITS": json.dumps(limits)})}
        assert "fileflow-active-files" not in specs
        assert specs["fileflow-converter-ocr"] == vals["converters"]["ocr"]["maxReplicaCount"]
        assert specs["fileflow-reprocess"] == 1  # the reprocessing limits keep fileflow's defaults


def test_setup_limits_can_be_set_to_fixed_caps_or_none():
    limits = _setup_limits(render({**MINIMAL, "limits": {"activeFiles": 500, "converters": 8}}))
    assert limits["fileflow-active-files"] == 500
    assert {v for k, v in limits.items() if k.startswith("fileflow-converter-")} == {8}
    limits = _setup_limits(render({**MINIMAL, "limits": {"converters": None}}))
    assert {v for k, v in limits.items() if k.startswith("fileflow-converter-")} == {None}
    with pytest.raises(Exception, match="converters"):
        render({**MINIMAL, "limits": {"converters": "sixteen"}})


# -- rollouts and nodes (issue 21) ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["default_objects", "full_objects"])
def test_mediator_upgrade_never_lowers_capacity_and_drains_for_the_longest_step(which, request):
    (dep,) = [d for n, d in of_kind(request.getfixturevalue(which), "Deployment").items() if n.endswith("-mediator")]
    spec = dep["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["minReadySeconds"] >= 30
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/ready", "health")
    grace = pod["terminationGracePeriodSeconds"]
    args = container["args"]
    assert int(args[args.index("--grace") + 1]) == grace - 10
    if which == "default_objects":  # the full values set their own, shorter grace on purpose
        longest = max(converters.spec(c).timeout_s for c in converters.BUILTINS)
        assert grace >= longest + 10, (grace, longest)


def test_node_autoscalers_leave_running_steps_alone_and_pods_ask_for_scratch(default_objects):
    for sj in of_kind(default_objects, "ScaledJob").values():
        template = sj["spec"]["jobTargetRef"]["template"]
        assert template["metadata"]["annotations"] == {
            "cluster-autoscaler.kubernetes.io/safe-to-evict": "false", "karpenter.sh/do-not-disrupt": "true"}
    for name, pod in pod_specs(default_objects):
        for container in pod["containers"]:
            assert "ephemeral-storage" in container["resources"]["requests"], name


def test_scheduling_values_reach_each_component(full_objects, full_values):
    (mediator,) = [d for n, d in of_kind(full_objects, "Deployment").items() if n.endswith("-mediator")]
    pod = mediator["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"workload": "fileflow-mediator"}  # the component's wins
    assert pod["tolerations"] == full_values["tolerations"] + full_values["mediator"]["pod"]["tolerations"]
    assert pod["affinity"] == full_values["mediator"]["pod"]["affinity"]
    assert pod["priorityClassName"] == "fileflow-mediator"
    assert mediator["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"
    assert mediator["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "documents"}
    for sj in of_kind(full_objects, "ScaledJob").values():
        template = sj["spec"]["jobTargetRef"]["template"]
        # Helm merges maps: the default safe-to-evict stays unless set to null
        assert template["metadata"]["annotations"] == {
            "cluster-autoscaler.kubernetes.io/safe-to-evict": "false", "karpenter.sh/do-not-disrupt": "true"}
        assert template["spec"]["nodeSelector"] == {"workload": "fileflow-steps"}
        assert template["spec"]["priorityClassName"] == "fileflow-steps"
        assert template["spec"]["affinity"] == full_values["converterPods"]["affinity"]
    (exporter,) = [d for n, d in of_kind(full_objects, "Deployment").items() if n.endswith("-exporter")]
    assert exporter["spec"]["template"]["spec"]["nodeSelector"] == full_values["nodeSelector"]
    assert "priorityClassName" not in exporter["spec"]["template"]["spec"]


def test_schema_refuses_unknown_pod_keys():
    with pytest.raises(Exception, match="podAffinity|additional"):
        render({**MINIMAL, "mediator": {"pod": {"podAffinity": {}}}})



# -- monitoring the chart ships (issue 21) ----------------------------------------------------------


def test_monitoring_is_optional_and_the_helm_test_is_on_by_default(default_objects):
    assert not of_kind(default_objects, "ServiceMonitor") and not of_kind(default_objects, "PrometheusRule")
    (pod,) = of_kind(default_objects, "Pod").values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["args"][-1].endswith(":9464")  # the exporter's Service URL
    assert not of_kind(render({**MINIMAL, "monitoring": {"helmTest": {"enabled": False}}}), "Pod")


def test_service_monitor_and_rules_watch_the_exporter_and_its_real_metrics(full_objects):
    (sm,) = of_kind(full_objects, "ServiceMonitor").values()
    (service,) = [o for o in of_kind(full_objects, "Service").values() if o["metadata"]["name"].endswith("-exporter")]
    selector = sm["spec"]["selector"]["matchLabels"]
    assert all(service["metadata"]["labels"].get(k) == v for k, v in selector.items())
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    (rule,) = of_kind(full_objects, "PrometheusRule").values()
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(rules) >= {"FileflowExporterDown", "FileflowBacklogOld", "FileflowFailureRate",
                          "FileflowRunsWithoutHeartbeat"}
    assert f'job="{service["metadata"]["name"]}"' in rules["FileflowExporterDown"]["expr"]
    assert "[20m]" in rules["FileflowBacklogOld"]["expr"]  # the full values' backlogAge
    served = _exporter_series()
    for name, r in rules.items():
        used = set(re.findall(r"fileflow_[a-z_]+", r["expr"]))
        assert used <= served, (name, used - served)


def test_monitoring_schemas_catch_a_misspelt_field(full_objects):
    (sm,) = of_kind(full_objects, "ServiceMonitor").values()
    broken = {**sm, "spec": {**sm["spec"], "endpoints": [{**sm["spec"]["endpoints"][0], "scrapeInterval": "30s"}]}}
    assert list(_monitoring_validator("servicemonitor.schema.json").iter_errors(broken))
    (rule,) = of_kind(full_objects, "PrometheusRule").values()
    group = rule["spec"]["groups"][0]
    broken = {**rule, "spec": {"groups": [{**group, "rules": [{**group["rules"][0], "for": "five minutes"}]}]}}
    assert list(_monitoring_validator("prometheusrule.schema.json").iter_errors(broken))


def test_the_helm_test_pod_reaches_the_exporter_through_its_network_policy(default_objects):
    (pod,) = of_kind(default_objects, "Pod").values()
    (policy,) = [p for n, p in of_kind(default_objects, "NetworkPolicy").items() if n.endswith("-exporter")]
    selectors = [f["podSelector"]["matchLabels"] for f in policy["spec"]["ingress"][0]["from"] if "podSelector" in f]
    assert any(all(pod["metadata"]["labels"].get(k) == v for k, v in sel.items()) for sel in selectors)


def test_scaling_model_has_the_server_and_the_charts_limits_in_it(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import scaling
    finally:
        sys.path.remove(str(ROOT / "bench"))
    run = lambda *extra: scaling.main(["--load", "seed-day", "--files", "20000", *extra])
    # 2,000 files/h at 0.81 + 0.51 per pool step CPU-s: about 0.8 server CPUs asked for
    free = run()
    asked = free["server"]["busiest_5min_cpus"]
    assert 0.6 < asked < 1.2, asked
    assert free["server"]["max_queue_delay_s"] == 0 and free["drained_after_last_arrival_s"] < 600
    small = run("--server-cpus", "0.5")  # half of what the load asks for: a backlog that outlives the day
    assert small["server"]["max_queue_delay_s"] > 600
    assert small["drained_after_last_arrival_s"] > 3 * 3600
    enough = run("--server-cpus", str(math.ceil(asked * 1.2 * 10) / 10))
    assert enough["server"]["max_queue_delay_s"] < 60 and enough["backlog"]["seconds_with_waits_over"] == 0
    # the chart's default limits never hold a step back; the old fixed caps do
    assert free["limits"]["active_files"] is None and free["limits"]["peak_held_in_mediator"] == {}
    assert free["limits"]["converters"]["converter-ocr"] == _load_values()["converters"]["ocr"]["maxReplicaCount"]
    capped = run("--set", "limits.converters=2")
    assert capped["limits"]["peak_held_in_mediator"], capped["limits"]
    assert capped["drained_after_last_arrival_s"] > free["drained_after_last_arrival_s"]


def test_upload_api_deployment_service_probes_and_network_policy(full_objects, full_values):
    api = full_values["uploadApi"]
    deployment = of_kind(full_objects, "Deployment")["fileflow-prod-upload-api"]
    assert deployment["spec"]["replicas"] == api["replicas"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["python", "-m", "fileflow.server.api"] and "8081" in container["args"]
    env = env_of(container)
    assert env["FILEFLOW_API_TOKENS"]["valueFrom"]["secretKeyRef"] == {"name": "fileflow-upload-api", "key": "api-tokens"}
    assert env["FILEFLOW_API_MAX_UPLOAD_BYTES"]["value"] == "10737418240"
    assert env["FILEFLOW_API_PUBLIC_URL"]["value"] == "https://uploads.example.com"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    tmp = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"] == "24Gi"
    service = of_kind(full_objects, "Service")["fileflow-prod-upload-api"]
    assert service["spec"]["ports"][0]["port"] == 8081
    policy = of_kind(full_objects, "NetworkPolicy")["fileflow-prod-upload-api"]["spec"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8081}]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "upload-service"}}} in policy["ingress"][0]["from"]
    assert len(policy["egress"]) == 3  # DNS, the Prefect API, storage


def test_upload_api_needs_its_token_secret_or_to_be_disabled(default_objects):
    with pytest.raises(Exception, match="uploadApi.tokens.existingSecret"):
        render({"storage": {"bucket": "acme-fileflow"}})
    off = render({"storage": {"bucket": "acme-fileflow"}, "uploadApi": {"enabled": False}})
    assert not any("upload-api" in o["metadata"]["name"] for o in off)
    # the default: nobody may call it until you say who (no ingress rule)
    assert of_kind(default_objects, "NetworkPolicy")["ff-fileflow-upload-api"]["spec"]["ingress"] == []


def test_step_locks_reach_the_mediator_pods_only_when_set_with_egress_to_their_redis(default_objects, full_objects):
    """locks.*: without them each mediator pod locks for itself (no variable, no Redis rule); with
    a Secret-held URL the mediator pods get FILEFLOW_LOCK_REDIS_URL from it, and their
    NetworkPolicy lets them reach that Redis (and only the mediator's)."""
    def mediator_env(objects):
        deployment = of_kind(objects, "Deployment")[next(n for n in of_kind(objects, "Deployment") if n.endswith("-mediator"))]
        return env_of(deployment["spec"]["template"]["spec"]["containers"][0])

    assert "FILEFLOW_LOCK_REDIS_URL" not in mediator_env(default_objects)
    assert mediator_env(full_objects)["FILEFLOW_LOCK_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "fileflow-locks-redis", "key": "url"}
    policies = of_kind(full_objects, "NetworkPolicy")
    redis_rules = {name: [r for r in p["spec"]["egress"] if any(
        t.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "redis"} for t in r.get("to", []))]
        for name, p in policies.items()}
    assert redis_rules.pop("fileflow-prod-mediator") == [{
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "redis"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}],
        "ports": [{"protocol": "TCP", "port": 6380}]}]
    assert not any(redis_rules.values()), redis_rules
    assert len(of_kind(default_objects, "NetworkPolicy")[f"{RELEASE}-fileflow-mediator"]["spec"]["egress"]) == 3
    # a plain URL, in the release's namespace
    plain = render({**MINIMAL, "locks": {"redisUrl": "redis://redis.media:6379/3"}})
    assert mediator_env(plain)["FILEFLOW_LOCK_REDIS_URL"] == {"name": "FILEFLOW_LOCK_REDIS_URL",
                                                              "value": "redis://redis.media:6379/3"}
    rule = of_kind(plain, "NetworkPolicy")[f"{RELEASE}-fileflow-mediator"]["spec"]["egress"][-1]
    assert rule["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}]


def test_every_container_keeps_tini_as_pid_1(full_objects, default_objects):
    """The images' entrypoint is tini (signals forwarded, zombies reaped: LibreOffice, ffmpeg and
    the warm children fork). A container that sets ``command`` replaces it, so fileflow's
    containers give ``args`` only, except the converter pods, which name tini themselves."""
    for objects in (full_objects, default_objects):
        for name, spec in pod_specs(objects) + [(p["metadata"]["name"], p["spec"]) for p in of_kind(objects, "Pod").values()]:
            for container in spec["containers"]:
                command = container.get("command")
                assert command is None or command[:2] == ["/usr/bin/tini", "--"], (name, command)
