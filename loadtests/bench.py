"""A benchmark run: a sweep of load levels against one server, one result JSON.

The result carries the `vllm bench serve` keys per level (`points`), its context (`meta`: card,
GPU count, price, model, quantization, vLLM version, server flags, client host, command) and the
cost at the SLO (`cost`).
"""

from __future__ import annotations

import asyncio
import json
import math
import platform
import socket
import sys
import time
from pathlib import Path

import httpx
from pydantic import BaseModel, Field

from loadtests.cost import DEFAULT_SLO_MS, cost_at_slo, price_for
from loadtests.metrics import summarize
from loadtests.runner import run_level
from loadtests.telemetry import Telemetry
from loadtests.workload import BenchRequest, Workload, build_requests, load_jsonl


class BenchConfig(BaseModel):
    base_url: str = "http://127.0.0.1:8000/v1"
    replica_urls: list[str] = Field(default_factory=list,
                                    description="more servers (same model) sharing the load")
    api_key: str | None = None
    model: str | None = None
    workload: Workload = Field(default_factory=Workload)
    workload_file: str | None = None
    concurrency: list[int] = Field(default_factory=lambda: [1, 4, 16])
    rates: list[float] = Field(default_factory=list, description="req/s levels (Poisson)")
    burstiness: float = 1.0
    prompts_per_level: int = Field(64, ge=1)
    warmup: int = 8
    slo_ms: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SLO_MS))
    card: str | None = None
    gpus: int = 1
    price_hour: float | None = None
    label: str = "measured"  # measured / emulated (memory-capped) / projected
    name: str = ""
    quant: str | None = None
    server_args: list[str] = Field(default_factory=list)
    progress: bool = True


def server_info(base_url: str, api_key: str | None) -> dict:
    root = base_url.rsplit("/v1", 1)[0]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    info: dict = {}
    try:
        with httpx.Client(timeout=10, headers=headers) as c:
            models = c.get(f"{base_url}/models").json()["data"]
            info["model"] = models[0]["id"]
            info["max_model_len"] = models[0].get("max_model_len")
            v = c.get(f"{root}/version")
            info["vllm_version"] = v.json().get("version") if v.status_code == 200 else None
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
        raise RuntimeError(f"cannot reach the server at {base_url}: {e}") from e
    return info


def _levels(cfg: BenchConfig) -> list[tuple[int | None, float]]:
    if cfg.rates:
        cap = cfg.concurrency[0] if len(cfg.concurrency) == 1 else None
        return [(cap, r) for r in cfg.rates]
    return [(c, math.inf) for c in cfg.concurrency]


async def _sweep(cfg: BenchConfig, model: str, source: list[BenchRequest] | None) -> list[dict]:
    urls = [u.rstrip("/") + "/chat/completions" for u in [cfg.base_url, *cfg.replica_urls]]
    root = cfg.base_url.rsplit("/v1", 1)[0]
    points = []
    offset = 0  # cfg.workload is seeded by run_bench: one seed per run, levels offsets apart
    for i, (conc, rate) in enumerate(_levels(cfg)):
        n = cfg.prompts_per_level
        if source is None:
            warm = build_requests(cfg.workload, model, cfg.warmup, offset=offset)
            reqs = build_requests(cfg.workload, model, n, offset=offset + cfg.warmup)
            offset += cfg.warmup + n
        else:
            warm = source[:cfg.warmup]
            reqs = [source[(cfg.warmup + k) % len(source)] for k in range(n)]
        tele = Telemetry(root, api_key=cfg.api_key)
        label = f"c={conc}" if math.isinf(rate) else f"rate={rate:g}/s c={conc}"
        records, duration = await run_level(
            urls, reqs, concurrency=conc, rate=rate, burstiness=cfg.burstiness, seed=i,
            api_key=cfg.api_key, warmup=warm, progress=cfg.progress, label=label,
            on_start=tele.start)
        telemetry = await tele.stop()
        point = summarize(records, duration, cfg.slo_ms)
        point.update({"max_concurrency": conc, "request_rate": rate if not math.isinf(rate)
                      else "inf", "burstiness": cfg.burstiness, "num_prompts": n,
                      "telemetry": telemetry})
        points.append(point)
    return points


def run_bench(cfg: BenchConfig, command: str = "") -> dict:
    info = server_info(cfg.base_url, cfg.api_key)
    model = cfg.model or info["model"]
    source = load_jsonl(cfg.workload_file, model) if cfg.workload_file else None
    # a fresh seed per run unless one is set: images never repeat across runs (or the
    # levels of a sweep run one run each), so the server's caches never flatter a level
    cfg = cfg.model_copy(update={"workload": cfg.workload.seeded()})
    t0 = time.time()
    points = asyncio.run(_sweep(cfg, model, source))
    price = {"price_hour": cfg.price_hour, "price_source": "command line", "price_date": None} \
        if cfg.price_hour is not None else price_for(cfg.card)
    meta = {
        "name": cfg.name or f"{cfg.card or 'unknown'}-{model}",
        "label": cfg.label, "card": cfg.card, "gpus": cfg.gpus,
        "price": price, "model": model, "quant": cfg.quant,
        "vllm_version": info.get("vllm_version"), "max_model_len": info.get("max_model_len"),
        "server_args": cfg.server_args, "base_url": cfg.base_url,
        "replica_urls": cfg.replica_urls,
        "client_host": f"{socket.gethostname()} ({platform.machine()}, python "
                       f"{platform.python_version()})",
        "command": command or " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
        "wall_s": round(time.time() - t0, 1),
        "workload": cfg.workload_file or cfg.workload.label(),
    }
    return {"meta": meta, "workload": cfg.workload.model_dump(), "slo_ms": cfg.slo_ms,
            "points": points,
            "cost": cost_at_slo(points, cfg.slo_ms, price and price["price_hour"], cfg.gpus)}


def write_result(result: dict, out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    return path
