"""Simulate KEDA scaling fileflow's pools, and the Prefect server, with the Helm chart's values.

    .venv/bin/python bench/scaling.py [--load seed-day|seed-peak] [--server-cpus N] [--files N]
                                      [--pod-start-s 8] [--pull-mb-s 50] [--pull-share 0.05] [--cost-scale 1]
                                      [--values helm/fileflow/values.yaml] [--set ocr.maxReplicaCount=60]
                                      [--json out.json]

What is read, not invented:
- the chart's values (helm/fileflow/values.yaml): which converters run on a pool (a ScaledJob)
  and which in the mediator pod; per pool targetPendingPerPod, min/maxReplicaCount,
  pollingInterval; the mediator's runsPerPod and its ScaledObject (min/max, polling, the
  scale-down window and rate);
- per-step costs (bench/converter_costs.json, measured by bench/converter_costs.py on
  tests/samples): the median seconds of every converter, and the cold start of a fresh Python
  importing Prefect's engine and the step flow.

What is assumed (flags, printed with the results): the day's arrival profile (FILES over 08:00 to
18:00 with a morning peak), the mix of file kinds, the members per archive, the pod start
latency (scheduling + container start with the image cached), and --cost-scale (the samples
are small files; real uploads cost more).

The model, per second:
- an upload becomes a mediator flow run; a mediator pod holds up to runsPerPod files at once,
  for the whole life of the file (it waits on pool steps); each flow run pays one cold start
  (Prefect's process worker starts an engine process per run); the pod's locally placed steps
  share its childProcesses warm children (a step waits for a free one);
- a file's steps run stage by stage (docs/architecture.md; steps in one stage in parallel);
  a step placed `local` costs its measured time inside the mediator pod; a step on a pool
  becomes a waiting flow run of converter-<name>;
- KEDA, every pollingInterval, for each ScaledJob: pending = waiting + running runs of the
  pool, new jobs = min(max, ceil(pending / target)) - unfinished jobs (the default scaling
  strategy); a new job's pod is ready after pod-start + one cold start (the worker), claims
  one waiting run if there is one (else exits at once: a wasted pod), and then pays a second
  cold start (the engine process) plus the step's cost (office_pdf also a cold LibreOffice);
- KEDA's ScaledObject for the mediator: desired = clamp(ceil(pending mediator runs /
  runsPerPod)), the HPA adding at most max(100 %, 4 pods) per 15 s, removing only after the
  stabilisation window and at most scaleDownPods per scaleDownPeriodSeconds; a removed pod's
  files are restarted on another pod (Prefect's worker stops its runs on SIGTERM), their
  finished steps are not run again (persisted results).

- the Prefect server: one FIFO queue of CPU work over --server-cpus: each file costs
  SERVER_CPU_PER_FILE when its mediator run starts, each pool step SERVER_CPU_PER_POOL_STEP
  before its run can be claimed (measured figures, see the constants); the report says how
  many CPUs the busiest 5 minutes asked for;
- the chart's limits as the setup hook creates them (values `limits`): fileflow-active-files
  bounds files in flight, fileflow-converter-<name> the pool runs the mediators hold (a step
  over the cap waits in the mediator, invisible to KEDA);
- pod start = --pod-start-s, plus for a share (--pull-share) of pods an image pull of the
  image's measured size at --pull-mb-s;
- step costs drawn per step from a lognormal with the measured median and max.

Not modelled: node autoscaling, CPU contention beyond the child processes, retries, failures,
the server's cost of the warm mediator's polling and of idle pods.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# The flows of docs/architecture.md: per kind, stages of steps that run in parallel.
STAGES: dict[str, list[list[str]]] = {
    "image": [["inspect"], ["image_renditions", "ocr"], ["language"]],
    "pdf": [["inspect"], ["pdf_preview", "pdf_text"], ["language"]],
    "office": [["inspect"], ["office_pdf"], ["pdf_preview", "pdf_text"], ["language"]],
    "drawing": [["inspect"], ["drawing_render"]],
    "video": [["inspect"], ["video_probe"], ["video_transcode", "video_poster"]],
    "archive": [["inspect"], ["archive_expand"]],
    "text": [["inspect"], ["text_extract"], ["language"]],
}
# Assumed mix of uploads (shares of files); change with --mix kind=share,...
DEFAULT_MIX = {"image": 0.40, "pdf": 0.25, "office": 0.20, "text": 0.05, "video": 0.04, "drawing": 0.03, "archive": 0.03}
# The Prefect server's CPU per file, measured on this project's machines (bench/analysis.md):
# - 0.81 CPU-s per file with the light steps local (router run + kind subflow + a task run per
#   step): `bench/throughput.py --files 300 --placements light-local`, 2026-11-27 04:19 UTC, one
#   server process on PostgreSQL (the table "server CPU s/file": 0.813); the 100-file run of the
#   same day measured 0.73, the 2026-12-05 `make bench` 0.81;
# - each step on a pool adds a flow run of converter-step: 2.26 CPU-s per text file with its 3
#   steps on pools against 0.73 local, side by side in the same run (bench/analysis.md, the
#   "placement" table): (2.26 - 0.73) / 3 = 0.51 CPU-s per pool step.
# One server process uses at most one CPU (Python); "server CPUs" below means API processes
# (replicas) x 1 CPU each, with PostgreSQL and Redis as their backends (0.928 CPU-s a file
# with two API processes, 14 % more than one: the model's figures are for one process).
SERVER_CPU_PER_FILE = 0.81
SERVER_CPU_PER_POOL_STEP = 0.51
# The images' sizes (uncompressed, as buildah reports them), measured by `make test-images` in
# the clean-clone .ci/run of 2026-12-05 20:16 UTC, with the data-room packages in
# (docs/kubernetes.md, "Images built here"): the compressed pull size is not measured here (no
# registry), so a pull is modelled as moving these bytes, an upper bound.
IMAGE_MB = {"mediator": 956.0, "base": 956.0, "ocr": 1030.0, "office": 1590.0, "video": 1440.0}
MAX_ACTIVE_MEMBERS = 2  # FILEFLOW_MAX_ACTIVE_MEMBERS default: members of one archive at once
MEDIATOR = "fileflow-mediator"


def arrivals(files: int, start_h: float = 8.0, end_h: float = 18.0, peak_h: float = 9.5,
             peak_sigma_h: float = 0.75, peak_share: float = 0.4) -> list[int]:
    """Files arriving in each second of the day (index 0 = midnight): a flat working day plus a
    Gaussian morning peak holding `peak_share` of the files. Deterministic."""
    day = 24 * 3600
    weights = [0.0] * day
    s0, s1 = int(start_h * 3600), int(end_h * 3600)
    flat = (1 - peak_share) / (s1 - s0)
    peak = [math.exp(-0.5 * ((t / 3600 - peak_h) / peak_sigma_h) ** 2) for t in range(s0, s1)]
    norm = sum(peak)
    for i, t in enumerate(range(s0, s1)):
        weights[t] = flat + peak_share * peak[i] / norm
    counts, carry = [0] * day, 0.0
    for t in range(day):
        carry += weights[t] * files
        counts[t] = int(carry)
        carry -= counts[t]
    counts[s1 - 1] += files - sum(counts)
    return counts


@dataclass
class Pool:
    name: str
    target: int
    min_jobs: int
    max_jobs: int
    polling: int
    waiting: deque = field(default_factory=deque)
    running: int = 0
    unfinished: int = 0
    peak_jobs: int = 0
    peak_jobs_at: int = 0
    peak_waiting: int = 0
    pod_seconds: float = 0.0
    jobs_started: int = 0
    wasted_jobs: int = 0
    steps: int = 0
    waits: list = field(default_factory=list)
    image: str = "base"
    cap: int | None = None  # fileflow-converter-<name>: pool runs the mediators may hold at once
    slots: int = 0
    held: deque = field(default_factory=deque)  # steps waiting in the mediator for a slot
    peak_held: int = 0


@dataclass
class FileRun:
    kind: str
    arrived: int
    stage: int = 0
    open_steps: int = 0
    done_steps: set = field(default_factory=set)
    pod: int | None = None
    members: deque | None = None  # archive members not started yet
    active_members: int = 0
    parent: "FileRun | None" = None
    epoch: int = 0  # bumped when its mediator pod is removed and the run starts again
    inflight: set = field(default_factory=set)  # pool steps queued or running (they survive a restart)
    active: bool = False

    def root(self) -> "FileRun":
        return self if self.parent is None else self.parent.root()


def chart_limits(values: dict) -> tuple[int | None, dict[str, int | None]]:
    """What the chart's setup hook creates (templates/_helpers.tpl fileflow.setupLimits):
    (fileflow-active-files, {converter: fileflow-converter-<name>}); None = no limit."""
    limits = values.get("limits") or {}
    active = limits.get("activeFiles")
    mode = limits.get("converters", "maxReplicaCount")
    caps: dict[str, int | None] = {}
    for name, c in values["converters"].items():
        if mode == "maxReplicaCount":
            caps[name] = c["maxReplicaCount"] * c["targetPendingPerPod"] if c["enabled"] else None
        else:
            caps[name] = None if mode is None else int(mode)
    return (None if active is None else int(active)), caps


class Simulation:
    def __init__(self, values: dict, costs: dict, mix: dict[str, float], files: int,
                 pod_start_s: float, cost_scale: float, members_per_archive: int,
                 arrivals_per_s: list[int] | None = None, server_cpus: float | None = None,
                 server_cpu_per_file: float = SERVER_CPU_PER_FILE,
                 server_cpu_per_pool_step: float = SERVER_CPU_PER_POOL_STEP,
                 pull_mb_s: float = 0.0, pull_share: float = 0.0, seed: int = 21):
        self.values, self.mix = values, mix
        self.rng = random.Random(seed)
        self.cold = costs["cold_start_s"]["median"]
        # Step costs as distributions: a lognormal per converter with the measured median, its
        # spread set so that the measured max is the n/(n+1) quantile of n measured runs
        z = lambda n: statistics.NormalDist().inv_cdf(n / (n + 1))
        self.cost_dist = {
            name: (c["median"] * cost_scale,
                   math.log(c["max"] / c["median"]) / z(c.get("n", 5)) if c["max"] > c["median"] > 0 else 0.0)
            for name, c in costs["step_seconds"].items()
        }
        self.cost = {name: c["median"] * cost_scale for name, c in costs["step_seconds"].items()}
        self.server_cpus = server_cpus
        self.server_cpu_file, self.server_cpu_step = server_cpu_per_file, server_cpu_per_pool_step
        self.server_free_at = 0.0
        self.server_delay_max, self.server_delay_max_at = 0.0, 0
        self.server_work = 0.0
        self.server_demand: dict[int, float] = defaultdict(float)  # CPU-s asked for per minute
        self.pull_mb_s, self.pull_share = pull_mb_s, pull_share
        self.pulls = 0
        self.active_cap, caps = chart_limits(values)
        self.active_files = 0
        self.local_caps = {name: caps[name] for name, c in values["converters"].items() if not c["enabled"]}
        self.local_used: dict[str, int] = defaultdict(int)
        self.local_held: dict[str, deque] = defaultdict(deque)
        # a pool pod of office_pdf starts its own LibreOffice (the mediator's stays warm)
        self.pool_extra = {"office_pdf": costs["office_cold_start_s"]["median"]}
        self.pod_start = pod_start_s
        self.members_per_archive = members_per_archive
        self.arrivals = arrivals_per_s if arrivals_per_s is not None else arrivals(files)
        self.files = files
        self.pools = {
            name: Pool(f"converter-{name}", c["targetPendingPerPod"], c["minReplicaCount"],
                       c["maxReplicaCount"], c["pollingInterval"], image=c["image"], cap=caps[name])
            for name, c in values["converters"].items() if c["enabled"]
        }
        m = values["mediator"]
        a = m["autoscaling"]
        self.med = dict(per_pod=m["runsPerPod"], children=m["childProcesses"], min=a["minReplicaCount"], max=a["maxReplicaCount"],
                        polling=a["pollingInterval"], window=a["scaleDownStabilizationSeconds"],
                        down_pods=a["scaleDownPods"], down_period=a["scaleDownPeriodSeconds"])
        self.events: list = []
        self.seq = 0
        self.med_pods: dict[int, dict] = {}  # id -> {"ready": bool, "files": set}
        self.med_next_id = 0
        self.med_queue: deque[FileRun] = deque()
        self.med_desired_history: deque = deque()
        self.med_last_down = -10**9
        self.med_last_up = -10**9
        self.med_pod_seconds = 0.0
        self.med_peak, self.med_peak_at = 0, 0
        self.restarted_by_scale_in = 0
        self.latencies: list[tuple[int, float]] = []
        self.backlog: list[int] = []
        self.med_queue_peak = 0
        # "backlog": some file or step has waited longer than this for a mediator slot or a pod
        # (a pool step normally waits pod start + cold start + up to one polling interval)
        self.overload_s = 60
        self.overloaded: list[int] = []
        self.oldest_wait = 0  # per second: files waiting for a mediator slot + runs waiting for a pod
        self.done = 0
        self.kind_cycle = self._kinds()
        for _ in range(self.med["min"]):
            self._add_med_pod(0, ready_at=0)

    # -- helpers ---------------------------------------------------------------------------------

    def _kinds(self):
        """Deterministic kind sequence with the mix's proportions (largest remainder)."""
        owed = {k: 0.0 for k in self.mix}
        while True:
            for k, share in self.mix.items():
                owed[k] += share
            kind = max(owed, key=owed.get)
            owed[kind] -= 1
            yield kind

    def _push(self, t: float, kind: str, *data) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, data))

    def _step_cost(self, step: str) -> float:
        median, sigma = self.cost_dist[step]
        return median * math.exp(self.rng.gauss(0.0, sigma)) if sigma else median

    def _pod_start(self, image: str) -> float:
        """Scheduling + container start, plus pulling the image on a node that lacks it."""
        if self.pull_mb_s and self.pull_share and self.rng.random() < self.pull_share:
            self.pulls += 1
            return self.pod_start + IMAGE_MB.get(image, 0.0) / self.pull_mb_s
        return self.pod_start

    def _server(self, now: float, cpu_s: float) -> float:
        """The Prefect server as one FIFO queue of CPU work over server_cpus: when the work
        asked for at `now` is done (no server limit: at once)."""
        self.server_work += cpu_s
        self.server_demand[int(now) // 60] += cpu_s
        if not self.server_cpus:
            return now
        start = max(now, self.server_free_at)
        self.server_free_at = start + cpu_s / self.server_cpus
        if self.server_free_at - now > self.server_delay_max:
            self.server_delay_max, self.server_delay_max_at = self.server_free_at - now, int(now)
        return self.server_free_at

    def _add_med_pod(self, now: int, ready_at: float | None = None) -> None:
        pod = self.med_next_id
        self.med_next_id += 1
        self.med_pods[pod] = {"ready": False, "files": set(), "busy": 0, "queue": deque()}
        self._push(now + self._pod_start("mediator") + self.cold if ready_at is None else ready_at, "med_ready", pod)

    # -- a file's progress -------------------------------------------------------------------------

    def _start_stage(self, f: FileRun, now: float) -> None:
        stages = STAGES[f.kind]
        epoch = f.root().epoch
        while f.stage < len(stages):
            todo = [s for s in stages[f.stage] if s not in f.done_steps]
            if todo:
                f.open_steps = len(todo)
                for step in todo:
                    if step in f.inflight:  # a restarted mediator re-attaches (idempotency key)
                        continue
                    if step in self.pools:
                        f.inflight.add(step)
                        self._pool_request(self.pools[step], f, step, now)
                    else:
                        self._local(f, step, now, epoch)
                return
            f.stage += 1
        if f.kind == "archive" and f.members is None:
            f.members = deque(FileRun(next(self.kind_cycle), f.arrived, parent=f, active=True,
                                       epoch=f.root().epoch)
                              for _ in range(self.members_per_archive))
        if f.members:
            while f.members and f.active_members < MAX_ACTIVE_MEMBERS:
                member = f.members.popleft()
                f.active_members += 1
                self._start_stage(member, now)
            return
        if f.active_members:
            return
        self._finish(f, now)

    def _pool_request(self, pool: Pool, f: FileRun, step: str, now: float) -> None:
        """The mediator takes a slot of fileflow-converter-<name> (or waits for one, invisible to
        KEDA), then asks the server for the pool's flow run, which is claimable once created."""
        if pool.cap is not None and pool.slots >= pool.cap:
            pool.held.append((f, step))
            pool.peak_held = max(pool.peak_held, len(pool.held))
            return
        pool.slots += 1
        self._push(self._server(now, self.server_cpu_step), "pool_enqueue", pool, f, step)

    def _local(self, f: FileRun, step: str, now: float, epoch: int) -> None:
        """A local step runs on one of the mediator pod's warm child processes, or waits for one
        (and, under a converter limit, first for a slot of it)."""
        cap = self.local_caps.get(step)
        if cap is not None and self.local_used[step] >= cap:
            self.local_held[step].append((f, step, epoch))
            return
        self.local_used[step] += 1
        pod = self.med_pods[f.root().pod]
        if pod["busy"] < self.med["children"]:
            pod["busy"] += 1
            self._push(now + self._step_cost(step), "local_done", f, step, epoch, f.root().pod)
        else:
            pod["queue"].append((f, step, epoch))

    def _step_done(self, f: FileRun, step: str, now: float, epoch: int | None = None) -> None:
        """A step ended: its result is kept (persisted) even if nobody waits for it any more."""
        f.inflight.discard(step)
        f.done_steps.add(step)
        root = f.root()
        if f.parent is not None and f.epoch != root.epoch:
            return  # a member of an archive run that was restarted (the restart expands it again)
        if not root.active or (epoch is not None and epoch != root.epoch):
            return  # the mediator run that waited for it was stopped; the restart reuses the result
        stages = STAGES[f.kind]
        if f.stage < len(stages) and step in stages[f.stage]:
            f.open_steps -= 1
            if f.open_steps == 0:
                f.stage += 1
                self._start_stage(f, now)

    def _finish(self, f: FileRun, now: float) -> None:
        if f.parent is not None:
            if not f.root().active or f.epoch != f.root().epoch:
                return
            parent = f.parent
            parent.active_members -= 1
            self._start_stage(parent, now)
            return
        pod = self.med_pods.get(f.pod)
        if pod is not None:
            pod["files"].discard(id(f))
        self.active_files -= 1
        self.latencies.append((f.arrived, now - f.arrived))
        self.done += 1

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, limit_s: int = 3 * 24 * 3600) -> None:
        files_by_id: dict[int, FileRun] = {}
        arrived = 0
        for t in range(limit_s):
            if t < len(self.arrivals):
                for _ in range(self.arrivals[t]):
                    self.med_queue.append(FileRun(next(self.kind_cycle), t))
                    arrived += 1
            while self.events and self.events[0][0] <= t:
                when, _, kind, data = heapq.heappop(self.events)
                if kind == "med_ready":
                    if data[0] in self.med_pods:
                        self.med_pods[data[0]]["ready"] = True
                elif kind == "local_done":
                    f, step, epoch, pod_id = data
                    self.local_used[step] -= 1
                    while self.local_held[step] and self.local_used[step] < (self.local_caps.get(step) or 1 << 30):
                        hf, hstep, hepoch = self.local_held[step].popleft()
                        if hf.root().active and hf.root().epoch == hepoch and hf.root().pod in self.med_pods:
                            self._local(hf, hstep, when, hepoch)
                    pod = self.med_pods.get(pod_id)
                    if pod is None:
                        continue  # the pod was removed, and the step with it
                    pod["busy"] -= 1
                    if f.root().active and f.root().epoch == epoch:
                        self._step_done(f, step, when, epoch)
                    while pod["queue"] and pod["busy"] < self.med["children"]:
                        nf, nstep, nepoch = pod["queue"].popleft()
                        if nf.root().active and nf.root().epoch == nepoch:
                            pod["busy"] += 1
                            self._push(when + self._step_cost(nstep), "local_done", nf, nstep, nepoch, pod_id)
                elif kind == "med_start":
                    f = data[0]
                    if f.pod is not None and f.pod in self.med_pods and data[1] == f.epoch:
                        f.active = True
                        self._start_stage(f, when)
                elif kind == "job_ready":
                    self._job_ready(data[0], when, data[1])
                elif kind == "pool_enqueue":
                    pool, f, step = data
                    pool.waiting.append((f, step, when))
                    pool.peak_waiting = max(pool.peak_waiting, len(pool.waiting))
                elif kind == "job_done":
                    pool, f, step, started = data
                    pool.running -= 1
                    pool.unfinished -= 1
                    pool.pod_seconds += when - started
                    pool.slots -= 1
                    if pool.held:
                        hf, hstep = pool.held.popleft()
                        self._pool_request(pool, hf, hstep, when)
                    self._step_done(f, step, when)
            # free mediator slots take queued files (each flow run pays an engine cold start)
            for pod_id, pod in self.med_pods.items():
                while (pod["ready"] and self.med_queue and len(pod["files"]) < self.med["per_pod"]
                       and (self.active_cap is None or self.active_files < self.active_cap)):
                    f = self.med_queue.popleft()
                    f.pod = pod_id
                    pod["files"].add(id(f))
                    files_by_id[id(f)] = f
                    self.active_files += 1
                    # the file's flow runs and task runs cost the server; they go as fast as it serves
                    self._push(self._server(t, self.server_cpu_file) + self.cold, "med_start", f, f.epoch)
            for name, pool in self.pools.items():
                if t % pool.polling == 0:
                    self._keda_scaled_job(pool, t)
            if t % self.med["polling"] == 0:
                self._keda_mediator(t, files_by_id)
            self.med_queue_peak = max(self.med_queue_peak, len(self.med_queue))
            oldest = max([t - self.med_queue[0].arrived] if self.med_queue else [0])
            for p in self.pools.values():
                if p.waiting:
                    oldest = max(oldest, t - p.waiting[0][2])
            if self.server_cpus:  # work queued at the server (file runs, pool runs to create)
                oldest = max(oldest, self.server_free_at - t)
            if oldest > self.overload_s:
                self.overloaded.append(t)
            self.oldest_wait = max(self.oldest_wait, oldest)
            self.backlog.append(len(self.med_queue) + sum(len(p.waiting) for p in self.pools.values()))
            self.med_pod_seconds += len(self.med_pods)
            if len(self.med_pods) > self.med_peak:
                self.med_peak, self.med_peak_at = len(self.med_pods), t
            if arrived == self.files and self.done == self.files:
                self.end = t
                return
        self.end = limit_s

    def _job_ready(self, pool: Pool, now: float, started: float) -> None:
        if not pool.waiting:
            pool.unfinished -= 1
            pool.wasted_jobs += 1
            pool.pod_seconds += now - started
            return
        f, step, enqueued = pool.waiting.popleft()
        pool.running += 1
        pool.steps += 1
        pool.waits.append(now - enqueued)
        self._push(now + self.cold + self.pool_extra.get(step, 0.0) + self._step_cost(step), "job_done", pool, f, step, started)

    def _keda_scaled_job(self, pool: Pool, t: int) -> None:
        pending = len(pool.waiting) + pool.running
        desired = min(pool.max_jobs, math.ceil(pending / pool.target))
        new = max(desired - pool.unfinished, pool.min_jobs - pool.unfinished, 0)
        new = min(new, pool.max_jobs - pool.unfinished)
        for _ in range(max(new, 0)):
            pool.unfinished += 1
            pool.jobs_started += 1
            self._push(t + self._pod_start(pool.image) + self.cold, "job_ready", pool, t)
        if pool.unfinished > pool.peak_jobs:
            pool.peak_jobs, pool.peak_jobs_at = pool.unfinished, t

    def _keda_mediator(self, t: int, files_by_id: dict) -> None:
        in_flight = sum(len(p["files"]) for p in self.med_pods.values())
        pending = len(self.med_queue) + in_flight
        desired = max(self.med["min"], min(self.med["max"], math.ceil(pending / self.med["per_pod"])))
        self.med_desired_history.append((t, desired))
        while self.med_desired_history and self.med_desired_history[0][0] < t - self.med["window"]:
            self.med_desired_history.popleft()
        current = len(self.med_pods)
        if desired > current:
            step_cap = max(2 * current, current + 4)  # HPA default scale-up: 100 % or 4 pods per 15 s
            if t - self.med_last_up >= 15:
                for _ in range(min(desired, step_cap) - current):
                    self._add_med_pod(t)
                self.med_last_up = t
            return
        stable = max(d for _, d in self.med_desired_history)
        if stable < current and t - self.med_last_down >= self.med["down_period"]:
            for _ in range(min(self.med["down_pods"], current - stable)):
                victim = min(self.med_pods, key=lambda p: (len(self.med_pods[p]["files"]), -p))
                pod = self.med_pods.pop(victim)
                for fid in pod["files"]:  # its runs stop; they start again on another pod
                    f = files_by_id[fid]
                    self.active_files -= 1
                    self._restart(f)
                    self.med_queue.appendleft(f)
                    self.restarted_by_scale_in += 1
            self.med_last_down = t

    def _restart(self, f: FileRun) -> None:
        """The mediator run stopped: local steps die with it, pool runs go on."""
        f.pod, f.active, f.epoch = None, False, f.epoch + 1
        f.stage, f.open_steps = 0, 0
        f.inflight = {s for s in f.inflight if s in self.pools}
        f.members, f.active_members = None, 0

    # -- report ------------------------------------------------------------------------------------

    def report(self) -> dict:
        last_arrival = max(t for t, n in enumerate(self.arrivals) if n)
        lat = [l for _, l in self.latencies]
        hourly = defaultdict(list)
        for arrived, l in self.latencies:
            hourly[arrived // 3600].append(l)
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
        peak = max(self.backlog)
        peak_at = self.backlog.index(peak)
        over = self.overloaded
        minutes = sorted(self.server_demand)
        window = [sum(self.server_demand.get(m + i, 0.0) for i in range(5)) / 300 for m in minutes] or [0.0]
        busiest = max(range(len(window)), key=window.__getitem__) if minutes else 0
        return {
            "files": self.files,
            "server": {"cpus": self.server_cpus, "cpu_s_total": round(self.server_work),
                       "cpu_s_per_file": round(self.server_work / max(1, self.files), 3),
                       "busiest_5min_cpus": round(window[busiest], 2),
                       "busiest_5min_at": hms(minutes[busiest] * 60) if minutes else None,
                       "max_queue_delay_s": round(self.server_delay_max, 1),
                       "max_queue_delay_at": hms(self.server_delay_max_at)},
            "limits": {"active_files": self.active_cap,
                       "converters": {p.name: p.cap for p in self.pools.values()},
                       "peak_held_in_mediator": {p.name: p.peak_held for p in self.pools.values() if p.peak_held}},
            "image_pulls": self.pulls,
            "backlog": {"peak_waiting": peak, "peak_at": hms(peak_at), "mediator_queue_peak": self.med_queue_peak,
                        "oldest_wait_s": round(self.oldest_wait, 1),
                        f"waits_over_{self.overload_s}s_from": hms(over[0]) if over else None,
                        f"waits_over_{self.overload_s}s_until": hms(over[-1]) if over else None,
                        "drain_s": (over[-1] - over[0]) if over else 0,
                        "seconds_with_waits_over": len(over)},
            "last_arrival": hms(last_arrival),
            "last_file_done": hms(self.end),
            "drained_after_last_arrival_s": self.end - last_arrival,
            "latency_s": {"median": round(statistics.median(lat), 1), "p95": round(q(lat, 0.95), 1),
                          "max": round(max(lat), 1)},
            "latency_by_arrival_hour": {f"{h:02d}:00": {"files": len(v), "median_s": round(statistics.median(v), 1),
                                                        "p95_s": round(q(v, 0.95), 1)}
                                        for h, v in sorted(hourly.items())},
            "mediator": {"peak_pods": self.med_peak, "peak_at": hms(self.med_peak_at),
                         "pod_hours": round(self.med_pod_seconds / 3600, 1),
                         "runs_restarted_by_scale_in": self.restarted_by_scale_in},
            "pools": {
                p.name: {"peak_pods": p.peak_jobs, "peak_at": hms(p.peak_jobs_at), "max": p.max_jobs,
                         "peak_waiting_runs": p.peak_waiting, "steps": p.steps, "jobs": p.jobs_started,
                         "wasted_jobs": p.wasted_jobs, "pod_hours": round(p.pod_seconds / 3600, 1),
                         "wait_s_median": round(statistics.median(p.waits), 1) if p.waits else None,
                         "wait_s_p95": round(q(p.waits, 0.95), 1) if p.waits else None}
                for p in self.pools.values()
            },
        }


def hms(t: float) -> str:
    t = int(t)
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}" + (f" (+{t // 86400}d)" if t >= 86400 else "")


def seed_peak(files: int | None) -> tuple[list[int], str]:
    """A working day (08:00-18:00, 40 % of it in a peak at 09:30) whose busiest hour has 5,000
    files (or `files` in the day with that shape)."""
    if files is None:
        shape = arrivals(100_000)
        busiest = max(sum(shape[h * 3600:(h + 1) * 3600]) for h in range(24))
        files = round(100_000 * 5_000 / busiest)
    return arrivals(files), f"{files} files 08:00-18:00, 40 % in a Gaussian peak at 09:30 (sigma 45 min)"


def seed_day(files: int | None) -> tuple[list[int], str]:
    """`files` (250,000) in a day, evenly over 08:00-18:00."""
    files = 250_000 if files is None else files
    return arrivals(files, peak_share=0.0), f"{files} files evenly over 08:00-18:00"


def legacy_burst(files: int | None) -> tuple[list[int], str]:
    """The earlier model's day: 250,000 files with 40 % in the 09:30 peak (about 68,000 files/h)."""
    files = 250_000 if files is None else files
    return arrivals(files), f"{files} files 08:00-18:00, 40 % in a Gaussian peak at 09:30 (sigma 45 min)"


LOADS = {"seed-peak": seed_peak, "seed-day": seed_day, "peaked-250k": legacy_burst}


def apply_sets(values: dict, sets: list[str]) -> None:
    """--set ocr.maxReplicaCount=60 or mediator.runsPerPod=16 (converters by bare name)."""
    for item in sets:
        path, _, raw = item.partition("=")
        keys = path.split(".")
        node = values["converters"] if keys[0] in values["converters"] else values
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = yaml.safe_load(raw)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Simulate KEDA scaling fileflow with the chart's values.")
    parser.add_argument("--values", type=Path, default=ROOT / "helm" / "fileflow" / "values.yaml")
    parser.add_argument("--costs", type=Path, default=ROOT / "bench" / "converter_costs.json")
    parser.add_argument("--files", type=int, default=None, help="files in the day (default: the --load's)")
    parser.add_argument("--load", choices=sorted(LOADS), default="seed-day",
                        help="seed-peak: a working day peaking at 5,000 files/h; seed-day: 250,000 files in a day "
                             "(08:00-18:00, evenly: 25,000 files/h)")
    parser.add_argument("--server-cpus", type=float, default=None,
                        help="Prefect server CPUs (API processes x 1 CPU); default: unbounded, and the report says "
                             "how many the load asked for")
    parser.add_argument("--server-cpu-per-file", type=float, default=SERVER_CPU_PER_FILE)
    parser.add_argument("--server-cpu-per-pool-step", type=float, default=SERVER_CPU_PER_POOL_STEP)
    parser.add_argument("--pull-mb-s", type=float, default=50.0,
                        help="assumed image pull rate on a node that lacks the image, MB/s (0: images always cached)")
    parser.add_argument("--pull-share", type=float, default=0.05,
                        help="assumed share of pod starts that land on a node without the image")
    parser.add_argument("--seed", type=int, default=21, help="seed of the step-cost draws and pulls")
    parser.add_argument("--pod-start-s", type=float, default=8.0,
                        help="assumed seconds from job creation to the container running (image cached)")
    parser.add_argument("--cost-scale", type=float, default=1.0, help="multiply every measured step cost")
    parser.add_argument("--members-per-archive", type=int, default=None,
                        help="default: the members of tests/samples/bundle.zip")
    parser.add_argument("--mix", default=",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items()))
    parser.add_argument("--set", action="append", default=[], help="override a value, e.g. ocr.maxReplicaCount=60")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)

    values = yaml.safe_load(args.values.read_text())
    apply_sets(values, args.set)
    costs = json.loads(args.costs.read_text())
    mix = {k: float(v) for k, v in (p.split("=") for p in args.mix.split(","))}
    total = sum(mix.values())
    mix = {k: v / total for k, v in mix.items()}
    if args.members_per_archive is None:
        import zipfile
        with zipfile.ZipFile(ROOT / "tests" / "samples" / "bundle.zip") as z:
            args.members_per_archive = sum(1 for i in z.infolist() if not i.is_dir())
    missing = {s for stages in STAGES.values() for st in stages for s in st} - set(costs["step_seconds"])
    if missing:
        raise SystemExit(f"no measured cost for {sorted(missing)}: run bench/converter_costs.py")

    per_s, described = LOADS[args.load](args.files)
    files = sum(per_s)
    sim = Simulation(values, costs, mix, files, args.pod_start_s, args.cost_scale, args.members_per_archive,
                     arrivals_per_s=per_s, server_cpus=args.server_cpus,
                     server_cpu_per_file=args.server_cpu_per_file, server_cpu_per_pool_step=args.server_cpu_per_pool_step,
                     pull_mb_s=args.pull_mb_s, pull_share=args.pull_share, seed=args.seed)
    sim.run()
    report = sim.report()
    report["assumptions"] = {
        "load": args.load, "arrivals": described, "peak_files_per_hour": max(sum(per_s[h * 3600:(h + 1) * 3600]) for h in range(24)),
        "server_cpu_per_file": args.server_cpu_per_file, "server_cpu_per_pool_step": args.server_cpu_per_pool_step,
        "pull_mb_s": args.pull_mb_s, "pull_share": args.pull_share, "image_mb": IMAGE_MB,
        "mix": {k: round(v, 3) for k, v in mix.items()}, "members_per_archive": args.members_per_archive,
        "pod_start_s": args.pod_start_s, "cost_scale": args.cost_scale,
        "cold_start_s": sim.cold, "costs_measured_on": costs.get("measured_on"), "overrides": args.set,
    }
    print_report(report, values)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_report(r: dict, values: dict) -> None:
    a = r["assumptions"]
    print(f"fileflow scaling simulation: {r['files']} files ({a['load']}: {a['arrivals']}, busiest hour "
          f"{a['peak_files_per_hour']} files); pod start {a['pod_start_s']} s + pull of {a['pull_share']:.0%} "
          f"at {a['pull_mb_s']} MB/s, cold start {a['cold_start_s']} s (measured), cost x{a['cost_scale']}")
    sv = r["server"]
    print(f"Prefect server: {sv['cpus'] or 'unbounded'} CPUs; {sv['cpu_s_total']} CPU-s "
          f"({sv['cpu_s_per_file']} a file); busiest 5 min asked for {sv['busiest_5min_cpus']} CPUs at "
          f"{sv['busiest_5min_at']}; longest wait for it {sv['max_queue_delay_s']} s at {sv['max_queue_delay_at']}")
    lim = r["limits"]
    print(f"limits: active files {lim['active_files']}, converters {lim['converters']}; "
          f"held in the mediator at peak {lim['peak_held_in_mediator'] or 'none'}; image pulls {r['image_pulls']}")
    print(f"mix {a['mix']}, {a['members_per_archive']} members per archive"
          + (f"; overrides {a['overrides']}" if a["overrides"] else ""))
    m = r["mediator"]
    print(f"last arrival {r['last_arrival']}, last file done {r['last_file_done']} "
          f"({r['drained_after_last_arrival_s']} s after the last arrival)")
    b = r["backlog"]
    print(f"waiting (files for a mediator slot + runs for a pod; the server's queue counts in the backlog): peak {b['peak_waiting']} at {b['peak_at']}, "
          f"mediator queue peak {b['mediator_queue_peak']}; oldest wait {b['oldest_wait_s']} s")
    if b["seconds_with_waits_over"]:
        print(f"backlog (something waited over 60 s): from {b['waits_over_60s_from']} until {b['waits_over_60s_until']} "
              f"({b['drain_s']} s, {b['seconds_with_waits_over']} s of it overloaded)")
    else:
        print("backlog: none (nothing waited over 60 s for a mediator slot or a pod)")
    print(f"file latency: median {r['latency_s']['median']} s, p95 {r['latency_s']['p95']} s, max {r['latency_s']['max']} s")
    print(f"mediator: peak {m['peak_pods']} pods at {m['peak_at']} (max {values['mediator']['autoscaling']['maxReplicaCount']}), "
          f"{m['pod_hours']} pod-hours, {m['runs_restarted_by_scale_in']} runs restarted by scale-in")
    print(f"{'pool':28} {'peak pods':>9} {'at':>9} {'max':>4} {'peak wait':>9} {'wait p50':>8} {'wait p95':>8} "
          f"{'steps':>7} {'wasted':>6} {'pod-h':>7}")
    for name, p in r["pools"].items():
        print(f"{name:28} {p['peak_pods']:>9} {p['peak_at']:>9} {p['max']:>4} {p['peak_waiting_runs']:>9} "
              f"{p['wait_s_median']!s:>8} {p['wait_s_p95']!s:>8} {p['steps']:>7} {p['wasted_jobs']:>6} {p['pod_hours']:>7}")
    print("latency by arrival hour (median / p95 s):",
          ", ".join(f"{h} {v['median_s']}/{v['p95_s']}" for h, v in r["latency_by_arrival_hour"].items()))


if __name__ == "__main__":
    main()
