"""Cost at a latency target: the highest load level that meets the SLO, priced per GPU-hour."""

from __future__ import annotations

from loadtests.metrics import meets_slo

DEFAULT_SLO_MS = {"ttft": 2000.0, "tpot": 50.0}  # judged at p90


def price_for(card: str | None, override: dict[str, float] | None = None) -> dict | None:
    """$/GPU-hour for a card from the catalog (serving/catalog/cards.yaml) or an override."""
    if not card:
        return None
    if override and card in override:
        return {"price_hour": override[card], "price_source": "command line", "price_date": None}
    from serving.catalog import cards

    c = cards().get(card)
    if c is None:
        return None
    return {"price_hour": c.price_hour, "price_source": c.price_source,
            "price_date": c.price_date}


def at_slo(points: list[dict], slo_ms: dict[str, float], percentile: int = 90) -> dict | None:
    """The point with the highest request throughput among those meeting the SLO."""
    ok = [p for p in points if meets_slo(p, slo_ms, percentile)]
    return max(ok, key=lambda p: p["request_throughput"]) if ok else None


def cost_at_slo(points: list[dict], slo_ms: dict[str, float], price_hour: float | None,
                gpus: int = 1, percentile: int = 90) -> dict:
    best = at_slo(points, slo_ms, percentile)
    out: dict = {"slo_ms": slo_ms, "slo_percentile": percentile, "gpus": gpus,
                 "price_hour_per_gpu": price_hour, "meets_slo": best is not None}
    if best is None:
        return out
    img_h = best["image_throughput"] * 3600 / gpus
    tok_h = best["output_throughput"] * 3600 / gpus
    out.update({
        "level": {k: best.get(k) for k in ("max_concurrency", "request_rate")},
        "request_throughput": best["request_throughput"],
        "images_per_gpu_hour": img_h,
        "output_tokens_per_gpu_hour": tok_h,
    })
    if price_hour:
        out["usd_per_1k_images"] = price_hour / img_h * 1000 if img_h else None
        out["usd_per_1m_output_tokens"] = price_hour / tok_h * 1e6 if tok_h else None
    return out
