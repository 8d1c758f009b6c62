"""`qvl bench`, `qvl report` and the Locust users against the real vLLM CPU server."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_qvl_bench_sweep_and_report(vllm_server, tmp_path):
    out = tmp_path / "cpu.json"
    r = subprocess.run(
        [sys.executable, "-m", "launch.cli", "bench", "--url", vllm_server.base_url,
         "--concurrency", "1,4", "--prompts", "12", "--warmup", "2", "--image-size", "448x336",
         "--output-tokens", "16", "--card", "cpu", "--price", "0.10", "--name", "cpu-tiny",
         "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["meta"]["vllm_version"] == "0.32.0" and res["meta"]["model"] == "qvl-tiny"
    assert [p["max_concurrency"] for p in res["points"]] == [1, 4]
    for p in res["points"]:
        assert p["completed"] == 12 and p["failed"] == 0
        assert p["total_output_tokens"] == 12 * 16  # counted from the server's usage
        for key in ("request_throughput", "output_throughput", "median_ttft_ms", "p99_ttft_ms",
                    "mean_tpot_ms", "p90_itl_ms", "median_e2el_ms", "image_throughput"):
            assert p[key] > 0, key
        assert p["telemetry"]["samples"] >= 2 and p["telemetry"]["prompt_tokens"] > 0
        # every image unique: warm-up and levels of the run never re-send one
        assert not p["telemetry"].get("mm_cache_hit_rate"), p["telemetry"]
    assert isinstance(res["workload"]["seed"], int)  # the run's fresh seed, to repeat it
    assert res["cost"]["meets_slo"] and res["cost"]["usd_per_1k_images"] > 0
    rep = subprocess.run([sys.executable, "-m", "launch.cli", "report", str(out), "--out",
                          str(tmp_path / "rep")], capture_output=True, text=True)
    assert rep.returncode == 0 and "| cpu-tiny | measured | cpu x1 |" in (
        tmp_path / "rep" / "report.md").read_text()


def test_rate_mode_and_file_workload(vllm_server, tmp_path):
    from launch.demo import demo_image

    (tmp_path / "a.png").write_bytes(demo_image(320, 240, 1))
    (tmp_path / "w.jsonl").write_text(json.dumps({"images": ["a.png"], "prompt": "What?",
                                                  "max_tokens": 8}) + "\n")
    out = tmp_path / "r.json"
    r = subprocess.run(
        [sys.executable, "-m", "launch.cli", "bench", "--url", vllm_server.base_url,
         "--rate", "20", "--prompts", "16", "--warmup", "1", "--workload-file",
         str(tmp_path / "w.jsonl"), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    p = json.loads(out.read_text())["points"][0]
    assert p["request_rate"] == 20.0 and p["completed"] == 16 and p["total_output_tokens"] == 128


def _stats(prefix):
    with open(f"{prefix}_stats.csv") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_locust_headless_reports_ttft_and_itl(vllm_server, tmp_path):
    env = {"QVL_IMAGE_SIZE": "320x240", "QVL_OUTPUT_TOKENS": "8", "QVL_POOL": "4",
           "PYTHONPATH": "."}
    import os

    r = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless",
         "-u", "4", "-r", "4", "-t", "8s", "--host", vllm_server.root_url,
         "--csv", str(tmp_path / "run"), "--only-summary"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _stats(tmp_path / "run")
    assert int(rows["/v1/chat/completions (stream)"]["Request Count"]) > 4
    assert int(rows["/v1/chat/completions (stream)"]["Failure Count"]) == 0
    for name in ("TTFT", "ITL", "TPOT"):
        assert int(rows[name]["Request Count"]) > 0, name


def test_locust_master_worker(vllm_server, tmp_path):
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "QVL_IMAGE_SIZE": "256x256", "QVL_OUTPUT_TOKENS": "4",
           "QVL_POOL": "2", "PYTHONPATH": "."}
    common = [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py"]
    master = subprocess.Popen(
        [*common, "--master", "--headless", "--expect-workers", "1", "-u", "2", "-r", "2",
         "-t", "6s", "--host", vllm_server.root_url, "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(port), "--csv", str(tmp_path / "dist"), "--only-summary"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = subprocess.Popen([*common, "--worker", "--master-host", "127.0.0.1",
                               "--master-port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _, err = master.communicate(timeout=120)
    finally:
        worker.kill()
        master.kill()
    assert master.returncode == 0, err[-2000:]
    rows = _stats(tmp_path / "dist")
    assert int(rows["/v1/chat/completions (stream)"]["Request Count"]) > 0
    assert int(rows["TTFT"]["Request Count"]) > 0
