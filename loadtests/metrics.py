"""Benchmark metrics with exactly the definitions of `vllm bench serve` (vllm/benchmarks/serve.py
`calculate_metrics`, vLLM 0.26-0.32), so a qvl result and a vLLM result mean the same thing:

- TTFT: request start to the first SSE chunk that carries choices.
- ITL: gaps between consecutive chunks that carry choices (the usage chunk does not count).
- E2EL (latency): request start to the last chunk with choices.
- TPOT per request: (latency - TTFT) / (output tokens - 1), for requests with > 1 output token.
- throughputs: completed requests / output tokens / all tokens per benchmark duration.
- goodput: completed requests meeting every SLO (ttft, tpot, e2el in ms) per second; a request
  with <= 1 output token counts as TPOT 0.
- percentiles: numpy's linear interpolation; keys `p{N}_{metric}_ms` as vLLM writes them.

Plus images/s (vision) from the images each request carried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass
class RequestRecord:
    """One request's outcome, as the runner measured it (seconds)."""
    success: bool
    start_time: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    prompt_len: int = 0
    output_tokens: int = 0
    images: int = 0
    error: str = ""


def _pkey(p: float) -> str:
    return str(int(p)) if int(p) == p else str(p)


def summarize(records: list[RequestRecord], duration_s: float,
              slo_ms: dict[str, float] | None = None,
              percentiles: tuple[float, ...] = PERCENTILES) -> dict:
    """The `vllm bench serve` result keys for these records, plus images and goodput."""
    ok = [r for r in records if r.success]
    out_lens = [r.output_tokens for r in ok]
    ttfts = [r.ttft for r in ok]
    e2els = [r.latency for r in ok]
    itls = [x for r in ok for x in r.itl]
    tpots, all_tpots = [], []
    for r in ok:
        tpot = 0.0
        if r.output_tokens > 1:
            tpot = (r.latency - r.ttft) / (r.output_tokens - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(out_lens)
    good = 0
    if slo_ms:
        cols, limits = [], []
        for key, values in (("ttft", ttfts), ("tpot", all_tpots), ("e2el", e2els)):
            if key in slo_ms:
                cols.append(values)
                limits.append(slo_ms[key] / 1000.0)
        good = sum(all(lim >= v for lim, v in zip(limits, row)) for row in zip(*cols))
    res = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration_s,
        "request_goodput": good / duration_s if slo_ms else None,
        "output_throughput": total_out / duration_s,
        "total_token_throughput": (total_in + total_out) / duration_s,
        "images_total": sum(r.images for r in ok),
        "image_throughput": sum(r.images for r in ok) / duration_s,
    }
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        arr = values or [0]
        res[f"mean_{name}_ms"] = float(np.mean(arr)) * 1000
        res[f"median_{name}_ms"] = float(np.median(arr)) * 1000
        res[f"std_{name}_ms"] = float(np.std(arr)) * 1000
        for p in percentiles:
            res[f"p{_pkey(p)}_{name}_ms"] = float(np.percentile(arr, p)) * 1000
    res["errors"] = sorted({r.error for r in records if not r.success})[:10]
    return res


def format_point(p: dict) -> str:
    """One line per load level, as `qvl bench`, the demo and gpu_compare print it."""
    level = (f"c={p['max_concurrency']}" if p["request_rate"] == "inf"
             else f"rate={p['request_rate']}/s c={p['max_concurrency']}")
    return (f"{level}: {p['request_throughput']:.2f} req/s, {p['output_throughput']:.0f} tok/s, "
            f"{p['image_throughput']:.2f} img/s, TTFT p50/p90 {p['median_ttft_ms']:.0f}/"
            f"{p['p90_ttft_ms']:.0f} ms, TPOT p50/p90 {p['median_tpot_ms']:.1f}/"
            f"{p['p90_tpot_ms']:.1f} ms, failed {p['failed']}")


def meets_slo(summary: dict, slo_ms: dict[str, float], percentile: int = 90) -> bool:
    """A load level meets the SLO when the chosen percentile of each metric is within it and
    nothing failed (a failed request met no SLO)."""
    if summary["completed"] == 0 or summary["failed"]:
        return False
    return all(summary[f"p{percentile}_{k}_ms"] <= v for k, v in slo_ms.items())
