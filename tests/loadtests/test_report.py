"""The report: Markdown + self-contained HTML, checked in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.metrics import RequestRecord, summarize


def fake_result(name, card, label, scale, price):
    points = []
    for c in (1, 4, 16):
        recs = [RequestRecord(success=True, ttft=0.1 * c, itl=[0.01 * scale] * 31,
                              latency=0.1 * c + 0.31 * scale, prompt_len=800, output_tokens=32,
                              images=1) for _ in range(8 * c)]
        p = summarize(recs, 2.0 * scale, {"ttft": 2000, "tpot": 50})
        p.update(max_concurrency=c, request_rate="inf")
        points.append(p)
    from loadtests.cost import cost_at_slo

    return {"meta": {"name": name, "label": label, "card": card, "gpus": 1, "model": "m",
                     "quant": "awq", "vllm_version": "0.32.0",
                     "price": {"price_hour": price, "price_source": "test", "price_date": "x"},
                     "server_args": ["--max-num-seqs", "64"], "client_host": "h",
                     "command": "qvl bench", "workload": "w"},
            "slo_ms": {"ttft": 2000, "tpot": 50}, "points": points,
            "cost": cost_at_slo(points, {"ttft": 2000, "tpot": 50}, price)}


def test_report_files(tmp_path):
    for r in (fake_result("t4-8b-awq", "t4", "emulated", 2.0, 0.526),
              fake_result("h200-8b", "h200", "measured", 1.0, 3.79)):
        (tmp_path / f"{r['meta']['name']}.json").write_text(json.dumps(r))
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "launch.cli", "report", str(tmp_path), "--out",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    md = (out / "report.md").read_text()
    assert "| t4-8b-awq | emulated | t4 x1 |" in md and "| h200-8b | measured |" in md
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 5
    assert not any(t in page for t in ("<script", "<link", "src=", "href="))  # self-contained


def test_report_rejects_non_results(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    r = subprocess.run([sys.executable, "-m", "launch.cli", "report", str(tmp_path / "x.json"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "no qvl bench result" in r.stderr


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed: `make test` installs it (apt-get install chromium)"
    return path


def test_report_renders_in_headless_chromium(tmp_path):
    from loadtests.report import write_report

    _, html = write_report([fake_result("t4", "t4", "emulated", 2.0, 0.526),
                            fake_result("h200", "h200", "measured", 1.0, 3.79)], tmp_path)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium(), *flags, "--dump-dom", html.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert dom.count("<svg") == 5 and dom.count("<polyline") >= 8 and "<rect" in dom
    assert "Throughput vs load" in dom and "$ per 1k images at SLO" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([chromium(), *flags, f"--screenshot={shot}", "--window-size=1400,1200",
                    html.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 20)
    assert img.size == (1400, 1200) and len(colors) > 50  # charts drawn, not a blank page
