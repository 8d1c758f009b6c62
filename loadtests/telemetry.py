"""Server and GPU telemetry sampled during a load level, summarised into the result.

vLLM's `/metrics` (Prometheus text): requests running/waiting, KV-cache usage, prefix and
multimodal cache hit rates (from counter deltas over the level) and where a request's time went
inside the server (mean queue, prefill and decode time, the server's own TTFT: the client's TTFT
minus this is time spent in the HTTP frontend and image preprocessing). NVML where a GPU and the
`nvidia-ml-py` package exist: utilisation, memory used, power. `psutil` where the server runs on
this host: CPU used per process and by its busiest thread (a thread near 100 % is a bottleneck
that no GPU setting removes).
"""

from __future__ import annotations

import asyncio
import re
import statistics

import aiohttp

_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+\d.eE]+|NaN)$")
GAUGES = {"vllm:num_requests_running": "running", "vllm:num_requests_waiting": "waiting",
          "vllm:kv_cache_usage_perc": "kv_cache_usage"}
COUNTERS = {"vllm:prefix_cache_queries_total": "prefix_queries",
            "vllm:prefix_cache_hits_total": "prefix_hits",
            "vllm:mm_cache_queries_total": "mm_queries", "vllm:mm_cache_hits_total": "mm_hits",
            "vllm:prompt_tokens_total": "prompt_tokens",
            "vllm:generation_tokens_total": "generation_tokens"}
# histograms whose mean over the level says where the time went (sum and count deltas)
TIMINGS = {"vllm:request_queue_time_seconds": "queue", "vllm:request_prefill_time_seconds":
           "prefill", "vllm:request_decode_time_seconds": "decode",
           "vllm:time_to_first_token_seconds": "server_ttft"}


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum each metric over its label sets (one engine, one model: one series each here)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m and m.group(3) != "NaN":
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


class _Nvml:
    def __init__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nv = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                            for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001 - no GPU, no driver or no package: no GPU telemetry
            self.nv, self.handles = None, []

    def sample(self) -> dict | None:
        if not self.handles:
            return None
        util = [self.nv.nvmlDeviceGetUtilizationRates(h).gpu for h in self.handles]
        mem = [self.nv.nvmlDeviceGetMemoryInfo(h).used / 2**30 for h in self.handles]
        power = [self.nv.nvmlDeviceGetPowerUsage(h) / 1000 for h in self.handles]
        return {"gpu_util_pct": sum(util) / len(util), "gpu_mem_gib": sum(mem),
                "gpu_power_w": sum(power)}


class Telemetry:
    """Samples while a level runs: `start()`, then `await stop()` for the summary."""

    def __init__(self, root_url: str, interval_s: float = 1.0, api_key: str | None = None):
        self.url = root_url.rstrip("/") + "/metrics"
        self.interval = interval_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.samples: list[dict[str, float]] = []
        self.gpu: list[dict] = []
        self._task: asyncio.Task | None = None
        self._nvml = _Nvml()
        self._cpu = ProcessCpu()

    async def _scrape(self, session: aiohttp.ClientSession) -> dict[str, float] | None:
        try:
            async with session.get(self.url, headers=self.headers) as r:
                return parse_prometheus(await r.text()) if r.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None

    async def _loop(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            while True:
                sample = await self._scrape(s)
                if sample:
                    self.samples.append(sample)
                g = self._nvml.sample()
                if g:
                    self.gpu.append(g)
                await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._cpu.start()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> dict:
        if self._task:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
                last = await self._scrape(s)
            if last:
                self.samples.append(last)
            self._task.cancel()
        return self.summary() | self._cpu.stop()

    def summary(self) -> dict:
        out: dict = {"samples": len(self.samples)}
        if not self.samples:
            return out
        for metric, name in GAUGES.items():
            vals = [s[metric] for s in self.samples if metric in s]
            if vals:
                out[f"{name}_max"] = max(vals)
                out[f"{name}_mean"] = statistics.fmean(vals)
        first, last = self.samples[0], self.samples[-1]
        delta = {name: last.get(m, 0.0) - first.get(m, 0.0) for m, name in COUNTERS.items()}
        for kind in ("prefix", "mm"):
            q = delta[f"{kind}_queries"]
            out[f"{kind}_cache_hit_rate"] = delta[f"{kind}_hits"] / q if q > 0 else None
        out["prompt_tokens"] = delta["prompt_tokens"]
        out["generation_tokens"] = delta["generation_tokens"]
        for metric, name in TIMINGS.items():
            n = last.get(metric + "_count", 0.0) - first.get(metric + "_count", 0.0)
            total = last.get(metric + "_sum", 0.0) - first.get(metric + "_sum", 0.0)
            if n > 0:
                out[f"{name}_mean_ms"] = 1000 * total / n
        if self.gpu:
            for key in self.gpu[0]:
                vals = [g[key] for g in self.gpu]
                out[f"{key}_mean"] = statistics.fmean(vals)
                out[f"{key}_max"] = max(vals)
        return out


class ProcessCpu:
    """CPU used by this host's vLLM processes over a level (psutil; nothing without it).

    Per process: cores used (1.0 = one core busy all the time) and the busiest thread's share.
    vLLM names its processes (`VLLM::EngineCore`, `VLLM::APIServer_0`) when setproctitle is
    installed; otherwise the command line is shown."""

    def __init__(self, match: tuple[str, ...] = ("vllm", "VLLM", "multiprocessing",
                                                 "loadtests")):
        self.match = match
        self._t0 = 0.0
        self._before: dict[int, tuple[str, float, dict[int, float]]] = {}

    def _snapshot(self) -> dict[int, tuple[str, float, dict[int, float]]]:
        try:
            import psutil
        except ImportError:
            return {}
        snap = {}
        for p in psutil.process_iter(["pid", "name", "cmdline"]):
            try:
                cmd = " ".join(p.info["cmdline"] or []) or p.info["name"] or ""
                if not any(m in cmd for m in self.match):
                    continue
                t = p.cpu_times()
                threads = {th.id: th.user_time + th.system_time for th in p.threads()}
                snap[p.pid] = (cmd[:60], t.user + t.system, threads)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return snap

    def start(self) -> None:
        import time

        self._t0 = time.monotonic()
        self._before = self._snapshot()

    def stop(self) -> dict:
        import time

        wall = time.monotonic() - self._t0
        after = self._snapshot()
        rows = []
        for pid, (name, total, threads) in after.items():
            if pid not in self._before or wall <= 0:
                continue
            _, total0, threads0 = self._before[pid]
            busiest = max((t - threads0.get(tid, 0.0) for tid, t in threads.items()), default=0)
            cores = (total - total0) / wall
            if cores >= 0.05:
                rows.append({"pid": pid, "process": name, "cores": round(cores, 2),
                             "busiest_thread_pct": round(100 * busiest / wall, 1)})
        rows.sort(key=lambda r: -r["cores"])
        return {"process_cpu": rows} if rows else {}
