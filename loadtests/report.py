"""`qvl report`: merge result JSONs (different cards, configurations) into one Markdown file and
one self-contained HTML page (inline SVG charts, no scripts, no network)."""

from __future__ import annotations

import html
import json
from pathlib import Path

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def load_results(paths: list[str]) -> list[dict]:
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.json")) if p.is_dir() else [p]
    results = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{f}: not a readable result ({e})") from e
        if isinstance(data, dict) and "points" in data and "meta" in data:
            data["_file"] = str(f)
            results.append(data)
    if not results:
        raise ValueError("no qvl bench result files found in " + ", ".join(paths))
    return results


def _name(r: dict) -> str:
    m = r["meta"]
    return m.get("name") or f"{m.get('card')}-{m.get('model')}"


def _level(p: dict) -> float:
    return p["max_concurrency"] or 0 if p["request_rate"] == "inf" else float(p["request_rate"])


def _fmt(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"


def svg_chart(title: str, series: list[tuple[str, list[tuple[float, float]]]], xlabel: str,
              ylabel: str, bars: bool = False, w: int = 640, h: int = 320) -> str:
    """A small line (or bar) chart as inline SVG."""
    pts = [(x, y) for _, s in series for x, y in s if y is not None]
    if not pts:
        return f'<svg class="chart" role="img" aria-label="{html.escape(title)}"></svg>'
    left, right, top, bottom = 64, 16, 32, 48
    xs = [x for x, _ in pts]
    ymax = max(y for _, y in pts) * 1.1 or 1.0
    xmin, xmax = (0, len(series)) if bars else (min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1)

    def sx(x):
        return left + (x - xmin) / (xmax - xmin) * (w - left - right)

    def sy(y):
        return h - bottom - y / ymax * (h - top - bottom)

    out = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}" '
           f'viewBox="0 0 {w} {h}" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{w / 2}" y="18" text-anchor="middle" font-weight="bold">'
           f'{html.escape(title)}</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#333"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#333"/>',
           f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
           f'<text x="14" y="{h / 2}" text-anchor="middle" transform="rotate(-90 14 {h / 2})">'
           f'{html.escape(ylabel)}</text>']
    for i in range(5):
        y = ymax * i / 4
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{y:,.3g}</text>')
    for i, (name, s) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        if bars:
            for x, y in s:
                if y is None:
                    continue
                bw = (w - left - right) / max(len(series), 1) * 0.6
                x0 = sx(i + 0.2)
                out.append(f'<rect class="bar" x="{x0:.1f}" y="{sy(y):.1f}" width="{bw:.1f}" '
                           f'height="{h - bottom - sy(y):.1f}" fill="{color}"/>')
                out.append(f'<text x="{x0 + bw / 2:.1f}" y="{sy(y) - 4:.1f}" text-anchor="middle"'
                           f' font-size="11">{y:,.3g}</text>')
        else:
            s = sorted((x, y) for x, y in s if y is not None)
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
            out.append(f'<polyline class="series" points="{path}" fill="none" stroke="{color}" '
                       f'stroke-width="2"/>')
            for x, y in s:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
                out.append(f'<text x="{sx(x):.1f}" y="{h - bottom + 14}" text-anchor="middle" '
                           f'font-size="10">{x:.3g}</text>')
        out.append(f'<text x="{w - right - 4}" y="{top + 14 * (i + 1)}" fill="{color}" '
                   f'text-anchor="end" font-size="12">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def charts(results: list[dict]) -> list[str]:
    named = [(_name(r), r) for r in results]
    return [
        svg_chart("Throughput vs load", [(n, [(_level(p), p["request_throughput"])
                                              for p in r["points"]]) for n, r in named],
                  "concurrency (or req/s offered)", "requests/s"),
        svg_chart("p90 TTFT vs load", [(n, [(_level(p), p["p90_ttft_ms"]) for p in r["points"]])
                                       for n, r in named], "concurrency", "ms"),
        svg_chart("p90 TPOT vs load", [(n, [(_level(p), p["p90_tpot_ms"]) for p in r["points"]])
                                       for n, r in named], "concurrency", "ms"),
        svg_chart("Tokens/s per GPU vs tokens/s per user",
                  [(n, [(1000 / p["median_tpot_ms"] if p["median_tpot_ms"] else 0,
                         p["output_throughput"] / r["meta"].get("gpus", 1))
                        for p in r["points"]]) for n, r in named],
                  "output tokens/s per user (1 / median TPOT)", "output tokens/s per GPU"),
        svg_chart("$ per 1k images at SLO", [(n, [(0, r["cost"].get("usd_per_1k_images"))])
                                             for n, r in named], "run", "USD", bars=True),
    ]


def markdown(results: list[dict], title: str) -> str:
    out = [f"# {title}", ""]
    out += ["| run | label | card x GPUs | model | quant | vLLM | at SLO req/s | images/GPU-h |"
            " $/1k images | $/1M output tokens |", "|" + " --- |" * 10]
    for r in results:
        m, c = r["meta"], r["cost"]
        out.append(f"| {_name(r)} | {m.get('label')} | {m.get('card')} x{m.get('gpus', 1)} | "
                   f"{m.get('model')} | {m.get('quant') or '-'} | {m.get('vllm_version')} | "
                   f"{_fmt(c.get('request_throughput'), 2)} | "
                   f"{_fmt(c.get('images_per_gpu_hour'), 0)} | "
                   f"{_fmt(c.get('usd_per_1k_images'), 4)} | "
                   f"{_fmt(c.get('usd_per_1m_output_tokens'), 3)} |")
    for r in results:
        m = r["meta"]
        slo = ", ".join(f"p{r['cost'].get('slo_percentile', 90)} {k} <= {v:g} ms"
                        for k, v in r["slo_ms"].items())
        price = m.get("price") or {}
        out += ["", f"## {_name(r)} ({m.get('label')})", "",
                f"- workload: {m.get('workload')}; SLO: {slo}",
                f"- price: {_fmt(price.get('price_hour'), 3)} $/GPU-hour "
                f"({price.get('price_source')}, {price.get('price_date')})",
                f"- server flags: `{' '.join(m.get('server_args') or []) or '(not recorded)'}`",
                f"- client: {m.get('client_host')}; command: `{m.get('command')}`", "",
                "| level | req/s | out tok/s | img/s | TTFT p50/p90/p99 ms | TPOT p50/p90 ms |"
                " ITL p50 ms | E2EL p50/p90 ms | failed |", "|" + " --- |" * 9]
        for p in r["points"]:
            lvl = (f"c={p['max_concurrency']}" if p["request_rate"] == "inf"
                   else f"{p['request_rate']}/s")
            out.append(f"| {lvl} | {p['request_throughput']:.2f} | {p['output_throughput']:.0f}"
                       f" | {p['image_throughput']:.2f} | {p['median_ttft_ms']:.0f} / "
                       f"{p['p90_ttft_ms']:.0f} / {p['p99_ttft_ms']:.0f} | "
                       f"{p['median_tpot_ms']:.1f} / {p['p90_tpot_ms']:.1f} | "
                       f"{p['median_itl_ms']:.1f} | {p['median_e2el_ms']:.0f} / "
                       f"{p['p90_e2el_ms']:.0f} | {p['failed']} |")
    out += ["", "Labels: measured = run on that card; emulated = run on a larger GPU with its "
                "memory capped to the card's; projected = computed, not run."]
    return "\n".join(out) + "\n"


def to_html(md: str, svgs: list[str], title: str) -> str:
    """The Markdown's tables as HTML, plus the charts. Self-contained: no external assets."""
    body, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("- "):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells)
                        + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
            body.append('<section class="charts">' + "\n".join(svgs) + "</section>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            body.append(f"<p class='meta'>{html.escape(line[2:])}</p>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:"
             "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
             "th{background:#f3f3f3}.charts{display:flex;flex-wrap:wrap;gap:16px}"
             "svg.chart{border:1px solid #ddd;background:#fff}.meta{margin:2px 0;color:#444}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")


def write_report(results: list[dict], out_dir: str | Path,
                 title: str = "qvl load-test report") -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(results, title)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(to_html(md, charts(results), title))
    return out / "report.md", out / "report.html"
