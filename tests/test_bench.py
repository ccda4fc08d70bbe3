"""The benchmark harness's own arithmetic and its /proc sampler (bench/), on a real child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import efficiency  # noqa: E402
import throughput  # noqa: E402

import converters  # noqa: E402


def test_stats_median_and_nearest_rank_p95():
    figures = common.stats([0.4, 0.1, 0.3, 0.2], unit=1000)
    assert figures == {"median": 250.0, "p95": 400.0, "min": 100.0, "max": 400.0, "n": 4}


def test_steady_rate_leaves_out_the_start_and_the_stragglers():
    series = [(0.0, 0), (10.0, 0), (20.0, 2), (30.0, 5), (40.0, 8), (90.0, 10)]
    assert throughput.steady_rate(series, total=10) == (8 - 2) / (40.0 - 20.0)
    assert throughput.steady_rate([(0.0, 0), (5.0, 1)], total=10) is None  # never reached 80 %


def test_sampler_sees_a_child_process_memory_and_cpu():
    script = "import time\nblock = bytearray(150 * 2**20)\nend = time.process_time() + 0.6\n" \
             "while time.process_time() < end: pass\ntime.sleep(0.3)\n"
    child = subprocess.Popen([sys.executable, "-c", script])
    with common.ProcSampler({"child": child.pid}, interval_s=0.05) as sampler:
        child.wait(30)
    memory = sampler.memory_mib()["child"]
    assert memory["peak_root_rss_mib"] >= 140
    assert memory["processes_seen"] == 1
    assert 0.4 <= sampler.cpu_seconds()["child"] <= 5


def test_profile_summary_shares(tmp_path):
    raw = tmp_path / "server.txt"
    api = "get_scheduled_flow_runs (/x/site-packages/prefect/server/api/workers.py:10)"
    raw.write_text(
        f"process 1:\"server\";main (/x/a.py:1);{api};write (/usr/lib/python3.11/asyncio/selector_events.py:5) 3\n"
        "process 1:\"server\";main (/x/a.py:1);idle (/x/b.py:2) 1\n"
    )
    summary = throughput.summarise_profile(raw)
    assert summary["samples"] == 4
    assert summary["top_inclusive"] == [("get_scheduled_flow_runs (prefect/server/api/workers.py)", 75.0)]
    assert summary["top_leaf"][0] == ("write (asyncio/selector_events.py)", 75.0)


def test_throughput_configurations_compare_mediators_and_placements_at_the_first_worker_count():
    got = throughput.configurations([1, 2], ["warm", "process"], ["pool", "light-local"])
    assert got == [("warm", 1, "pool"), ("process", 1, "pool"), ("warm", 2, "pool"), ("warm", 1, "light-local")]
    assert throughput.PLACEMENTS["pool"] == {}  # no light step local: every step on its pool
    assert throughput.PLACEMENTS["light-local"] == converters.design_placement()  # what fileflow up does
    assert {"inspect", "text_extract", "language"} <= throughput.PLACEMENTS["light-local"].keys()  # a text file's
    assert throughput.PLACEMENTS["pool-certifi"] == {}  # the same steps as `pool`, only Prefect's CA bundle
    assert throughput.VARIANT_ENV["pool-certifi"] == {"FILEFLOW_STACK_PLAIN_HTTP_CA": "0"}
    assert throughput.PLACEMENTS["pool-dbpool"] == {}  # the same steps as `pool`, only the server's database pool
    assert throughput.VARIANT_ENV["pool-dbpool"] == {"PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20"}
    # light-local on a server of two API processes sharing Redis: the same steps, another server
    assert throughput.PLACEMENTS["light-local-2api"] == throughput.PLACEMENTS["light-local"]
    assert throughput.VARIANT_STACK["light-local-2api"] == {"server_workers": 2, "redis_url": throughput.BENCH_REDIS_URL}
    # the same stack and steps, only each server process's database pool
    assert throughput.PLACEMENTS["light-local-2api-dbpool"] == throughput.PLACEMENTS["light-local-2api"]
    assert throughput.VARIANT_STACK["light-local-2api-dbpool"] == throughput.VARIANT_STACK["light-local-2api"]
    assert throughput.VARIANT_ENV["light-local-2api-dbpool"] == {"PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "10"}
    assert "light-local" not in throughput.VARIANT_STACK  # the single-process server of fileflow up


def test_timed_counts_the_cpu_of_children_nobody_waits_for(tmp_path):
    # the parent starts a busy grandchild and waits for it by polling, never by wait():
    # getrusage(RUSAGE_CHILDREN) would count neither; the sampled tree counts both
    script = ("import subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time\\nend = time.process_time() + 0.8\\n"
              "while time.process_time() < end: pass'])\n"
              "while p.poll() is None: time.sleep(0.05)\n")
    wall, cpu, code = efficiency._timed([sys.executable, "-c", script], dict(os.environ), tmp_path / "log")
    assert code == 0
    assert cpu >= 0.6, cpu


def test_realistic_corpus_is_deterministic_distinct_and_upload_sized(tmp_path):
    one = common.make_files(tmp_path / "a", {"image": 2, "video": 1, "pdf": 1}, offset=3, corpus="realistic")
    again = common.make_files(tmp_path / "b", {"image": 1}, offset=3, corpus="realistic")
    assert one[0].read_bytes() == again[0].read_bytes()
    assert one[0].read_bytes() != one[1].read_bytes()
    from PIL import Image

    with Image.open(one[0]) as picture:
        assert picture.size == (4032, 3024)
    assert one[0].stat().st_size > 2_000_000  # a photo's size, not a flat picture's
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams",
                                       str(one[2])], capture_output=True, check=True).stdout)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (1280, 720)
    assert 9.5 < float(probe["format"]["duration"]) < 10.5
    assert one[3].read_bytes().count(b"/Type /Page ") == 12


def test_light_corpus_clips_stay_distinct_past_their_repeating_sizes(tmp_path):
    # the soak counts distinct manifests: two equal clips would be one file id, and it would wait for good
    (first,) = common.make_files(tmp_path / "a", {"video": 1}, offset=0)
    (later,) = common.make_files(tmp_path / "b", {"video": 1}, offset=40)  # same size and rate as clip 0
    assert first.read_bytes() != later.read_bytes()


def test_ocr_accuracy_counts_each_found_word_at_most_as_often_as_it_occurs():
    import ocr_accuracy

    reference = ocr_accuracy.words("Die Größe, die Fläche. Die Größe!")
    assert reference == ["Die", "Größe", "die", "Fläche", "Die", "Größe"]
    assert ocr_accuracy.accuracy(reference, ocr_accuracy.words("Die GroBe die Flache Die Größe Größe Größe")) == 5 / 6  # Größe counted twice, not three times
    assert ocr_accuracy.accuracy(reference, []) == 0.0
    assert ocr_accuracy.accuracy([], ["x"]) == 1.0
    row = {"language": "de", "words": 6, "non_ascii_words": 3,
           "eng": {"accuracy": 0.5, "non_ascii_accuracy": 0.0, "seconds_per_page": 0.25, "languages": "eng"},
           "auto": {"accuracy": 1.0, "non_ascii_accuracy": 1.0, "seconds_per_page": 1.1, "languages": "deu"}}
    assert ocr_accuracy.table([row]).splitlines()[-1] == "| de | 6 (3) | 50 % | 0 % | 0.25 | 100 % | 100 % | 1.10 | deu |"


def test_soak_with_faults_plans_its_mix_and_schedule_and_reports_leftovers():
    """bench/soak_faults.py's own arithmetic and table (its real run needs a stack: docs/reliability.md)."""
    import soak_faults

    assert soak_faults.mix(14) == common.MIX  # one of each kind's share
    assert sum(soak_faults.mix(300).values()) == 300 and set(soak_faults.mix(300)) == set(common.MIX)
    assert soak_faults.schedule(["worker", "server"], 60, 200) == [(60, "worker"), (120, "server"), (180, "worker")]
    figures = {
        "files_in": 3, "manifests_out": 3, "statuses": {"completed": 3}, "wall_s": 61.2,
        "faults_injected": [{"fault": "mediator"}, {"fault": "s3"}, {"fault": "mediator"}],
        "restarts": {"worker-mediator": 2, "worker-warm-0": 0}, "audit": {"exit_code": 0, "report": {
            "submitted": 3, "terminal": 3, "lost": 0, "findings": []}},
        "unfinished_runs": {"flow_runs": 0, "task_runs": 0}, "orphan_processes": [], "scratch_left": ["fileflow-step-1-x"],
        "rss": {"server": {"first_mib": 200.0, "peak_mib": 260.0, "final_mib": 220.0, "samples": 7, "pids": 2,
                           "cpu_s": 12.5}},
    }
    lines = soak_faults.table(figures).splitlines()
    assert lines[2] == ("| 3 | 3 | completed 3 | mediator 2, s3 1 | worker-mediator 2 | exit 0 (3 submitted, 3 terminal, "
                        "0 lost, 0 findings) | 0 flow, 0 task | 0 | 1 | 61 s |")
    assert lines[-1] == "| server | 200.0 | 260.0 | 220.0 | 1.10 | 7 | 2 | 12.5 |"


def test_soak_with_faults_sees_the_long_running_processes_and_their_memory():
    """stack.json records supervisors: the soak follows each supervised process (the
    supervisor's child) under its name, and the supervisor as ``<name>/supervisor``."""
    import time

    import soak_faults

    def supervisor():  # a process whose one child is the long-running one
        return subprocess.Popen([sys.executable, "-c", "import subprocess; subprocess.run(['sleep', '30'])"])

    mediator, server = supervisor(), supervisor()
    try:
        for _ in range(100):
            found = soak_faults.long_running({"worker-mediator": mediator.pid, "server": server.pid})
            if {"worker-mediator", "server"} <= set(found):
                break
            time.sleep(0.05)
        assert set(found) == {"worker-mediator", "worker-mediator/supervisor", "server", "server/supervisor"}
        assert found["worker-mediator/supervisor"] == mediator.pid and found["worker-mediator"] != mediator.pid
        with soak_faults.RssLog(lambda: {"server": server.pid}, interval_s=0.05) as rss:
            pass
        figures = rss.per_process()
        assert figures["server"]["pids"] == 1 and figures["server/supervisor"]["peak_mib"] > 5
        busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
        for _ in range(200):  # CPU seconds from /proc: they grow while it spins (a loaded machine: slower)
            if soak_faults._cpu_s(busy.pid) >= 0.3:
                break
            time.sleep(0.1)
        assert soak_faults._cpu_s(busy.pid) >= 0.3 and soak_faults._cpu_s(server.pid) < 0.3  # a sleeper: little
        busy.kill()
        busy.wait()
        # a pid's CPU seconds, summed over the pids a name had: a restart does not reset the figure
        log = soak_faults.RssLog(lambda: {}, interval_s=1)
        log.pids = {"mediator": [1, 2]}
        log.samples = [{"rss_mib": {"mediator": 100.0}, "cpu_s": {"mediator": [1, 5.0]}},
                       {"rss_mib": {"mediator": 101.0}, "cpu_s": {"mediator": [1, 7.5]}},
                       {"rss_mib": {"mediator": 90.0}, "cpu_s": {"mediator": [2, 1.5]}}]
        assert log.per_process()["mediator"]["cpu_s"] == 9.0
    finally:
        for process in (mediator, server):
            process.kill()
            process.wait()