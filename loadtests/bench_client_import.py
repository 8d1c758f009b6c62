"""Benchmark: how long `import qvl_client` takes in a fresh venv with only the client installed.

    python -m loadtests.bench_client_import --out loadtests/results/client-import.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "loadtests/results/client-import.json"))
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    uv = shutil.which("uv") or "uv"
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        py = str(venv / "bin" / "python")
        subprocess.run([uv, "pip", "install", "-q", "--python", py, str(ROOT / "clients")],
                       check=True)
        pkgs = subprocess.run([uv, "pip", "freeze", "--python", py], capture_output=True,
                              text=True, check=True).stdout.split()
        def timed(code: str) -> list[float]:
            subprocess.run([py, "-c", code], check=True)  # warm the page cache
            out = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                subprocess.run([py, "-c", code], check=True)
                out.append(time.perf_counter() - t0)
            return out

        baseline = timed("pass")
        times = timed("import qvl_client")
        full = timed("from qvl_client import VisionClient, prepare_image")
        sdk = timed("import openai")
    result = {
        "benchmark": "client-import", "command": "python -m loadtests.bench_client_import",
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "runs": a.runs, "import_s_median": round(statistics.median(times), 3),
        "import_s_max": round(max(times), 3),
        "client_classes_s_median": round(statistics.median(full), 3),
        "client_classes_s_max": round(max(full), 3),
        "openai_sdk_alone_s_median": round(statistics.median(sdk), 3),
        "note": "import qvl_client is the package import (names load lazily); the client "
                "classes need the OpenAI SDK, whose own import is most of their time",
        "interpreter_start_s_median": round(statistics.median(baseline), 3),
        "installed": pkgs, "target_s": 1.0,
        "meets_target": max(times) < 1.0,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "installed"}, indent=2))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
