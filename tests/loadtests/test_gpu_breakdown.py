"""The GPU breakdown tool's arithmetic and its reading of a torch profiler trace. The probes
themselves run on the GPU machine (results in loadtests/results/); here: what the tool derives
from them."""

from __future__ import annotations

import gzip
import json

import pytest

from loadtests.gpu_breakdown import probes, summarize_trace


def test_probes_isolate_encoder_prefill_and_decode():
    by_name = {name: fields for name, fields, _ in probes(128)}
    assert by_name["full"] == {}
    assert by_name["prefill+vit"] == {"output_tokens": 1}
    assert by_name["prefill"] == {"images_per_request": 0, "output_tokens": 1}
    assert by_name["decode"] == {"images_per_request": 0}
    assert {c for _, _, c in probes(96)} == {96}


def _trace(tmp_path):
    """A trace in the shape torch.profiler writes for vLLM's worker: kernels on the GPU
    timeline (us) and the worker's per-step annotations mirrored as gpu_user_annotation."""
    ev = [
        {"cat": "gpu_user_annotation", "name": "execute_context_1(845)_generation_40(40)",
         "ts": 0, "dur": 30_000},
        {"cat": "gpu_user_annotation", "name": "execute_context_0(0)_generation_41(41)",
         "ts": 30_000, "dur": 8_000},
        {"cat": "gpu_user_annotation", "name": "execute_context_3(2535)_generation_38(38)",
         "ts": 40_000, "dur": 60_000},
        {"cat": "kernel", "name": "sm90_fp8_gemm", "ts": 0, "dur": 20_000},
        {"cat": "kernel", "name": "flash_fwd", "ts": 10_000, "dur": 15_000},  # overlaps
        {"cat": "kernel", "name": "sm90_fp8_gemm", "ts": 40_000, "dur": 50_000},
        {"cat": "kernel", "name": "layer_norm", "ts": 95_000, "dur": 5_000},
        {"cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 10},
    ]
    p = tmp_path / "rank0.123.pt.trace.json.gz"
    p.write_bytes(gzip.compress(json.dumps({"traceEvents": ev}).encode()))
    return p


def test_trace_summary_counts_steps_busy_time_and_top_kernels(tmp_path):
    text = summarize_trace(_trace(tmp_path))
    lines = text.splitlines()
    # window 0..100 ms; busy = union of kernel intervals = 25 + 50 + 5 = 80 ms
    assert "window 100 ms, GPU busy 80.0%, kernel time 90 ms" in lines[0]
    assert any("decode only" in ln and "n=   1" in ln and "8.0 ms" in ln for ln in lines)
    assert any("1 prefill" in ln and "30.0 ms" in ln for ln in lines)
    assert any("2+ prefills" in ln and "60.0 ms" in ln for ln in lines)
    top = [ln for ln in lines if "sm90_fp8_gemm" in ln][0]
    assert "77.8%" in top and "70.0" in top  # 70 of 90 ms, 2 calls


def test_trace_without_kernels_says_so(tmp_path):
    p = tmp_path / "t.pt.trace.json"
    p.write_text(json.dumps({"traceEvents": [{"cat": "cpu_op", "name": "x", "ts": 0, "dur": 1}]}))
    assert "no kernels recorded" in summarize_trace(p)


@pytest.mark.gpu
def test_vit_kernels_time_the_tower_on_a_gpu(tmp_path):
    from loadtests import vit_kernels

    out = tmp_path / "k.json"
    vit_kernels.main(["--images", "2", "--patches", "1024", "--out", str(out)])
    tower = json.loads(out.read_text())["per_image_tower_ms"]
    assert tower["gemm-bf16"] > 0 and tower["attn-sdpa-flash"] > 0
