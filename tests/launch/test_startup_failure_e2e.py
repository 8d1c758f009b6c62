"""A start that fails inside vLLM (not caught by pre-flight) ends non-zero with the cause."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e


def test_corrupt_weights_are_explained_in_one_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])  # a download cut short
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "launch.cli", "serve", "--model", str(bad),
         "--port", str(free_port()), "--max-model-len", "512", "--max-pixels", "65536",
         "--cpu-kv-cache-gib", "1"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"[qvl] error: the weights in {bad} are unreadable (truncated or corrupt "
                    "safetensors): re-download or rebuild the checkpoint")
    assert "restarting" not in r.stderr  # a failed first start is not retried
    print(f"failed start reported after {time.monotonic() - t0:.1f} s")
