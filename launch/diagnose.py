"""Turn a failed vLLM start into one line a person can act on.

vLLM reports a failed start as a long traceback (often several, one per process). The rules
below match the log tail against known causes, most specific first; when none matches, the last
exception line of the log is shown.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from pathlib import Path

from serving.settings import ServeSettings

# (pattern in vLLM's log, what to tell the user). Keep the message actionable.
RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"current platform (\w+) does not support ray"),
     "vLLM's {m1} build cannot run the Ray executor: serve on one node with `qvl serve` (no "
     "--distributed-executor-backend ray), or use GPU nodes for `qvl ray`"),
    (re.compile(r"Placement group .* infeasible|exceeds the total number of available GPUs|"
                r"number of required GPUs exceeds", re.I),
     "the Ray cluster has fewer GPUs than TP x PP needs: start `qvl ray worker` on the missing "
     "nodes (`qvl ray status --address ...` shows what joined) or lower the parallel sizes"),
    (re.compile(r"address already in use", re.I),
     "port {port} on {host} is already in use: stop the other server or pass --port"),
    (re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory", re.I),
     "the GPU ran out of memory while loading the model: lower --max-model-len or "
     "--max-num-seqs, use a 4-bit checkpoint, or add GPUs (see `qvl plan`)"),
    (re.compile(r"No available memory for the cache blocks|"
                r"larger than the maximum number of tokens that can be stored in KV cache|"
                r"max seq len .* is larger than", re.I),
     "the model fits but leaves too little memory for the KV cache: lower --max-model-len, "
     "raise --gpu-memory-utilization, or use a smaller/quantized model (see `qvl plan`)"),
    (re.compile(r"Unsupported CPU attention configuration: (head_dim=\d+)"),
     "vLLM's CPU attention does not support this model's {m1}: use a model with head_dim 64 "
     "or 128 (the tiny model from `qvl tiny-model` works)"),
    (re.compile(r"does not appear to have a file named config\.json|"
                r"Can't load the configuration of|No such file or directory: .*config\.json", re.I),
     "{model} has no usable config.json: point --model at a complete checkpoint directory"),
    (re.compile(r"SafetensorError|Error while deserializing header|"
                r"safetensors_rust\.SafetensorError", re.I),
     "the weights in {model} are unreadable (truncated or corrupt safetensors): "
     "re-download or rebuild the checkpoint"),
    (re.compile(r"is not a local folder and is not a valid model identifier|"
                r"Repository Not Found|We couldn't connect to|LocalEntryNotFoundError|"
                r"offline mode is enabled", re.I),
     "model {model} was not found locally and the model hub cannot be reached: download it "
     "first or pass a local directory"),
    (re.compile(r"Bfloat16 is only supported on GPUs with compute capability", re.I),
     "this GPU has no bfloat16: pass --dtype half"),
    (re.compile(r"No CUDA GPUs are available|Failed to infer device type|"
                r"Found no NVIDIA driver", re.I),
     "no usable GPU was found: install the CPU build (`make install`) or check the driver"),
]

_EXC_LINE = re.compile(r"\b([A-Za-z_][\w.]*(?:Error|Exception|Exit))(?::\s*(.+))?$")
# vLLM's wrappers around the real cause, raised in the API server after a child failed
_WRAPPERS = re.compile(r"Engine core initialization failed|EngineDeadError|See root cause above|"
                       r"See stack trace|Traceback")
_PYDANTIC_TYPE = re.compile(r"\s*\[type=.*$")
# vLLM INFO/WARNING records may mention exceptions ("... errors like `OSError: ...`")
_INFO_RECORD = re.compile(r"\b(?:INFO|WARNING|DEBUG) \d\d-\d\d \d\d:\d\d:\d\d")
_LOG_PREFIX = re.compile(r"^\((?:APIServer|EngineCore|Worker)[^)]*\)\s*"
                         r"(?:ERROR \S+ \S+ \[[^\]]+\]\s?)?")


def _strip_prefix(line: str) -> str:
    return _LOG_PREFIX.sub("", line).strip()


def explain_failure(lines: Iterable[str], settings: ServeSettings) -> str:
    """The one-line cause of a failed start, from vLLM's log lines."""
    lines = [ln.rstrip() for ln in lines]
    text = "\n".join(lines)
    for pattern, message in RULES:
        m = pattern.search(text)
        if m:
            groups = {f"m{i}": g for i, g in enumerate(m.groups(), 1)}
            return message.format(port=settings.port, host=settings.host,
                                  model=settings.model, **groups)
    for i in range(len(lines) - 1, -1, -1):
        m = _EXC_LINE.search(lines[i])
        if (not m or _WRAPPERS.search(lines[i]) or lines[i].lstrip().startswith("File ")
                or _INFO_RECORD.search(lines[i])):
            continue
        detail = m.group(2) or ""
        if "validation error" in detail and i + 1 < len(lines):  # pydantic: cause is below
            detail = _PYDANTIC_TYPE.sub("", _strip_prefix(lines[i + 1])).strip()
        if not detail:  # a bare `AssertionError`: show the failed statement
            code = [_strip_prefix(ln) for ln in lines[max(0, i - 4):i]]
            detail = next((c for c in reversed(code) if c.startswith("assert ")), "")
        return f"vLLM failed: {m.group(1).rsplit('.', 1)[-1]}: {detail[:300]}".rstrip(": ")
    return "vLLM exited without an error message (see its log above)"


def preflight(settings: ServeSettings) -> str | None:
    """Cheap checks before vLLM is started; returns the problem, or None when all is well."""
    import importlib.util

    if settings.model_is_local_path():
        path = Path(settings.model).expanduser()
        if not path.exists():
            return (f"model directory not found: {settings.model} (pass a checkpoint directory, "
                    "a hub id such as Qwen/Qwen3-VL-8B-Instruct, or build the tiny model with "
                    "`qvl tiny-model DIR`)")
        if not path.is_dir():
            return f"model path is not a directory: {settings.model}"
        if not (path / "config.json").is_file():
            return (f"{settings.model} has no config.json: point --model at a complete "
                    "checkpoint directory")
    if not port_is_free(settings.host, settings.port):
        return (f"port {settings.port} on {settings.host} is already in use: stop the other "
                "server or pass --port")
    if importlib.util.find_spec("vllm") is None:
        return ("vLLM is not installed in this environment: run `make install` (CPU build) "
                "or `uv sync --extra gpu` on a GPU machine")
    return None


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
