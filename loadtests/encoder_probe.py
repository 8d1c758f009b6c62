"""Diagnostics only: time the multimodal encoder inside a real vLLM server.

A vLLM general plugin (loaded in every vLLM process through the `vllm.general_plugins` entry
point) that, when `QVL_ENCODER_PROBE=<dir>` is set, wraps the V2 model runner's
`EncoderRunner.execute_mm_encoder` and Qwen3-VL's `prepare_encoder_metadata`, and writes
`<dir>/encoder-<pid>.json` at most once a second:

    cpu_prep_ms    engine CPU: batching the items' pixel tensors into pinned memory + H2D issue
    cpu_launch_ms  engine CPU: running the encoder's Python (launching its kernels)
    gpu_h2d_ms     GPU stream time of the copies issued while batching
    gpu_encoder_ms GPU stream time from the encoder's first kernel to its last (gaps included)
    meta_cpu_ms / meta_gpu_ms   the same for the position-embedding/cu_seqlens metadata

all summed, with the number of calls and images, so per image = total / images. GPU times come
from CUDA events read back later (no synchronisation added to the step).

`install(dir)` writes the entry point (a `.dist-info` folder) and returns the folder to put on
PYTHONPATH of the server; nothing is installed into an environment.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

ENV = "QVL_ENCODER_PROBE"
_DIST = "qvl_encoder_probe-0.1.dist-info"


def read(probe_dir: str | Path) -> Counter:
    """The totals of every process's summary in `probe_dir` (one per engine)."""
    total: Counter = Counter()
    for f in Path(probe_dir).glob("encoder-*.json"):
        total.update(json.loads(f.read_text())["totals"])
    return total


def per_image(before: Counter, after: Counter) -> dict[str, float]:
    """Per-image means of what happened between two `read`s."""
    d = Counter(after)
    d.subtract(before)
    n = max(d["images"], 1)
    out = {k: round(v / n, 3) for k, v in d.items() if k.endswith("_ms")}
    out.update(images=d["images"], calls=d["calls"])
    return out


def install(root: str | Path) -> Path:
    """A folder that, on PYTHONPATH, makes vLLM load this module as a general plugin."""
    root = Path(root)
    dist = root / _DIST
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: qvl-encoder-probe\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[vllm.general_plugins]\nqvl_encoder_probe = loadtests.encoder_probe:register\n")
    return root


class Totals:
    """Accumulates (CPU seconds, pending CUDA event pairs) and dumps a JSON summary."""

    def __init__(self, out: Path, every_s: float = 1.0):
        self.out, self.every_s, self.last = out, every_s, time.monotonic()
        self.sums: Counter = Counter()
        self.batch_sizes: Counter = Counter()
        self.pending: list[tuple[str, object, object]] = []

    def gpu(self, key: str, start, end) -> None:
        self.pending.append((key, start, end))

    def drain(self, force: bool = False) -> None:
        keep = []
        for key, s, e in self.pending:
            if force or e.query():
                if force:
                    e.synchronize()
                self.sums[key] += s.elapsed_time(e)
            else:
                keep.append((key, s, e))
        self.pending = keep
        if force or time.monotonic() - self.last > self.every_s:
            self.last = time.monotonic()
            self.dump()

    def summary(self) -> dict:
        n = max(self.sums["images"], 1)
        return {"totals": dict(self.sums), "batch_sizes": dict(self.batch_sizes),
                "per_image_ms": {k: v / n for k, v in self.sums.items()
                                 if k.endswith("_ms")}}

    def dump(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.summary(), indent=1))


def register() -> None:
    out = os.environ.get(ENV)
    if not out:
        return
    try:
        import torch
        from vllm.multimodal.utils import group_and_batch_mm_kwargs
        from vllm.v1.worker.gpu.mm import encoder_runner
    except ImportError:
        return
    if getattr(encoder_runner.EncoderRunner, "_qvl_probe", False):
        return
    totals = Totals(Path(out) / f"encoder-{os.getpid()}.json")

    def event():
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    @torch.inference_mode()
    def execute_mm_encoder(self, mm_kwargs):
        tower = type(getattr(self.model, "visual", None))
        if hasattr(tower, "prepare_encoder_metadata") and not hasattr(tower, "_qvl_probe"):
            tower.prepare_encoder_metadata = timed_meta(tower.prepare_encoder_metadata)
            tower._qvl_probe = True
        outputs = []
        t0, e0 = time.perf_counter(), event()
        for _modality, num_items, batch in group_and_batch_mm_kwargs(
                mm_kwargs, device=self.device, pin_memory=True):
            t1, e1 = time.perf_counter(), event()
            result = self.model.embed_multimodal(**batch)
            t2, e2 = time.perf_counter(), event()
            outputs.extend(result)
            totals.sums["calls"] += 1
            totals.sums["images"] += num_items
            totals.batch_sizes[num_items] += 1
            totals.sums["cpu_prep_ms"] += (t1 - t0) * 1e3
            totals.sums["cpu_launch_ms"] += (t2 - t1) * 1e3
            totals.gpu("gpu_h2d_ms", e0, e1)
            totals.gpu("gpu_encoder_ms", e1, e2)
            t0, e0 = time.perf_counter(), event()
        totals.drain()
        return outputs

    def timed_meta(original):
        def prepare_encoder_metadata(self, *args, **kwargs):
            t0, e0 = time.perf_counter(), event()
            meta = original(self, *args, **kwargs)
            totals.sums["meta_cpu_ms"] += (time.perf_counter() - t0) * 1e3
            totals.gpu("meta_gpu_ms", e0, event())
            return meta
        return prepare_encoder_metadata

    encoder_runner.EncoderRunner.execute_mm_encoder = execute_mm_encoder
    encoder_runner.EncoderRunner._qvl_probe = True
