"""Synthetic workloads: unique images per request within a run and across runs, the same
images again for the same seed, and threads that change nothing but the time taken."""

from __future__ import annotations

import base64
import io

from PIL import Image

from loadtests import workload as wl
from loadtests.bench import BenchConfig
from loadtests.workload import Workload, build_requests, synthetic_image


def _urls(reqs) -> list[str]:
    return [part["image_url"]["url"] for r in reqs
            for part in r.body["messages"][0]["content"] if part["type"] == "image_url"]


def test_synthetic_image_is_a_function_of_its_seed():
    a, b = synthetic_image(320, 240, 7), synthetic_image(320, 240, 7)
    assert a == b and a != synthetic_image(320, 240, 8)
    img = Image.open(io.BytesIO(a))
    assert img.format == "JPEG" and img.size == (320, 240)
    assert len(a) > 20_000  # noise: not a flat, trivially compressible picture


def test_no_two_runs_share_an_image_unless_seeded():
    # levels of a sweep that each start a run from offset 0 (gpu_compare does) once re-sent
    # the same images: the server's prefix and multimodal caches answered them (a level at
    # 56 req/s on a card that serves 30); an unseeded workload now draws a fresh seed per call
    w = Workload(image_width=64, image_height=48)
    first, second = _urls(build_requests(w, "m", 6)), _urls(build_requests(w, "m", 6))
    assert len(set(first)) == 6 and set(first).isdisjoint(second)
    seeded = Workload(image_width=64, image_height=48, seed=11)
    assert _urls(build_requests(seeded, "m", 6)) == _urls(build_requests(seeded, "m", 6))
    assert set(_urls(build_requests(seeded, "m", 6))).isdisjoint(
        _urls(build_requests(seeded, "m", 6, offset=6)))


def test_seeded_draws_a_fresh_seed_unless_one_is_set():
    cfg = BenchConfig(workload=Workload())
    assert cfg.workload.seed is None
    s1, s2 = cfg.workload.seeded().seed, cfg.workload.seeded().seed
    assert s1 is not None and s1 != s2
    assert Workload(seed=3).seeded().seed == 3


def test_threads_draw_what_one_thread_draws(monkeypatch):
    w = Workload(image_width=64, image_height=48, reuse_ratio=0.3, seed=5)
    monkeypatch.setattr(wl.os, "cpu_count", lambda: 8)
    many = build_requests(w, "m", 40)
    monkeypatch.setattr(wl.os, "cpu_count", lambda: 1)
    one = build_requests(w, "m", 40)
    assert [r.body for r in many] == [r.body for r in one]
    urls = _urls(many)
    pooled = [u for u in urls if urls.count(u) > 1]
    assert pooled and len(set(urls)) < len(urls)  # the reuse pool is used
    head = urls[0].split(",", 1)
    assert head[0] == "data:image/jpeg;base64" and base64.b64decode(head[1])[:2] == b"\xff\xd8"
