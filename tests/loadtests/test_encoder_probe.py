"""The encoder probe's bookkeeping and its plugin registration (the timing itself runs inside a
GPU server: `python -m loadtests.gpu_breakdown --encoder-probe`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from loadtests import encoder_probe


class Event:
    """A CUDA event stand-in: done or not, with a time stamp in ms."""

    def __init__(self, t: float, done: bool = True):
        self.t, self.done = t, done

    def query(self):
        return self.done

    def synchronize(self):
        self.done = True

    def elapsed_time(self, end):
        return end.t - self.t


def test_totals_wait_for_unfinished_events_and_write_per_image_means(tmp_path):
    t = encoder_probe.Totals(tmp_path / "encoder-1.json", every_s=0)
    t.sums.update(calls=2, images=10, cpu_prep_ms=50.0)
    t.gpu("gpu_encoder_ms", Event(0), Event(40))
    late = Event(100, done=False)
    t.gpu("gpu_encoder_ms", Event(60), late)
    t.drain()
    assert t.sums["gpu_encoder_ms"] == 40 and len(t.pending) == 1  # the second is still running
    t.drain(force=True)
    out = json.loads((tmp_path / "encoder-1.json").read_text())
    assert out["totals"]["gpu_encoder_ms"] == 80
    assert out["per_image_ms"] == {"cpu_prep_ms": 5.0, "gpu_encoder_ms": 8.0}


def test_per_image_is_the_difference_between_two_reads(tmp_path):
    for pid, images, ms in [(1, 4, 40.0), (2, 6, 30.0)]:  # one summary per engine process
        (tmp_path / f"encoder-{pid}.json").write_text(json.dumps(
            {"totals": {"images": images, "calls": 1, "gpu_encoder_ms": ms}}))
    after = encoder_probe.read(tmp_path)
    assert after == Counter(images=10, calls=2, gpu_encoder_ms=70.0)
    d = encoder_probe.per_image(Counter(images=5, calls=1, gpu_encoder_ms=20.0), after)
    assert d == {"gpu_encoder_ms": 10.0, "images": 5, "calls": 1}


def test_install_makes_vllm_find_the_plugin_and_it_stays_off_without_the_variable(tmp_path):
    root = encoder_probe.install(tmp_path / "ep")
    code = ("from importlib.metadata import entry_points; "
            "eps = [e for e in entry_points(group='vllm.general_plugins') "
            "if e.name == 'qvl_encoder_probe']; print(eps[0].value); eps[0].load()()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.getcwd()])}
    env.pop(encoder_probe.ENV, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loadtests.encoder_probe:register"
