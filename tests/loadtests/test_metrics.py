"""qvl's metrics equal vLLM's own `calculate_metrics` on the same requests."""

from __future__ import annotations

import random

import pytest

from loadtests.cost import cost_at_slo
from loadtests.metrics import RequestRecord, meets_slo, summarize
from loadtests.runner import arrival_delays


def records(n=200, seed=0):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if i % 37 == 5:
            out.append(RequestRecord(success=False, error="HTTP 503"))
            continue
        ttft = rnd.uniform(0.05, 3.0)
        out_tokens = rnd.choice([1, 2, 64, 128])
        itl = [rnd.uniform(0.005, 0.08) for _ in range(max(out_tokens - 1, 0))]
        out.append(RequestRecord(success=True, start_time=i * 0.01, ttft=ttft, itl=itl,
                                 latency=ttft + sum(itl), prompt_len=rnd.randint(700, 900),
                                 output_tokens=out_tokens, images=1))
    return out


def test_same_numbers_as_vllm_calculate_metrics():
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
    from vllm.benchmarks.serve import calculate_metrics

    recs, dur = records(), 17.3
    slo = {"ttft": 2000.0, "tpot": 50.0}
    outs = [RequestFuncOutput(success=r.success, latency=r.latency, output_tokens=r.output_tokens,
                              ttft=r.ttft, itl=r.itl, prompt_len=r.prompt_len,
                              start_time=r.start_time, error=r.error) for r in recs]
    vm, _ = calculate_metrics([], outs, dur, None, [50, 90, 95, 99], slo)
    ours = summarize(recs, dur, slo)
    for key in ("completed", "failed", "total_input", "total_output"):
        theirs = getattr(vm, key)
        mine = ours[{"total_input": "total_input_tokens",
                     "total_output": "total_output_tokens"}.get(key, key)]
        assert mine == theirs, key
    for key in ("request_throughput", "request_goodput", "output_throughput",
                "total_token_throughput"):
        assert ours[key] == pytest.approx(getattr(vm, key)), key
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std"):
            assert ours[f"{stat}_{metric}_ms"] == pytest.approx(
                getattr(vm, f"{stat}_{metric}_ms")), (stat, metric)
        for p, value in getattr(vm, f"percentiles_{metric}_ms"):
            assert ours[f"p{int(p)}_{metric}_ms"] == pytest.approx(value), (p, metric)
    assert ours["image_throughput"] == pytest.approx(ours["completed"] / dur)


def test_slo_and_cost():
    recs = records()
    point = summarize([r for r in recs if r.success], 10.0)
    assert meets_slo(point, {"ttft": 5000, "tpot": 100})
    assert not meets_slo(point, {"ttft": 100})
    failing = summarize(recs, 10.0)
    assert not meets_slo(failing, {"ttft": 5000})  # failed requests break the SLO
    cost = cost_at_slo([{**point, "max_concurrency": 8, "request_rate": "inf"}],
                       {"ttft": 5000, "tpot": 100}, price_hour=3.6)
    img_h = point["image_throughput"] * 3600
    assert cost["images_per_gpu_hour"] == pytest.approx(img_h)
    assert cost["usd_per_1k_images"] == pytest.approx(3.6 / img_h * 1000)
    assert cost["usd_per_1m_output_tokens"] == pytest.approx(
        3.6 / (point["output_throughput"] * 3600) * 1e6)


def test_poisson_arrivals_have_the_asked_rate():
    d = arrival_delays(4000, rate=20.0, burstiness=1.0, seed=1)
    assert d[0] == 0 and d == sorted(d)
    assert 4000 / d[-1] == pytest.approx(20.0, rel=0.05)
    assert arrival_delays(3, float("inf"), 1.0, 0) == [0.0, 0.0, 0.0]
