"""Shared fixtures. End-to-end tests share ONE real vLLM CPU server per session (`vllm_server`),
started through `qvl serve` in its own process group and stopped by PID."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from launch.background import ServerHandle
from launch.demo import TINY_SERVE_ARGS

SERVED_NAME = "qvl-tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from serving.checkpoint import write_checkpoint

    out = tmp_path_factory.mktemp("models") / "tiny"
    write_checkpoint(out, "tiny", seed=0)
    return out


def start_tiny_server(model_dir: Path, log_dir: Path, *extra: str, api_key: str | None = None,
                      name: str = "server") -> ServerHandle:
    port = free_port()
    handle = ServerHandle(["--model", str(model_dir), *TINY_SERVE_ARGS, *extra], port=port,
                          api_key=api_key, log_path=log_dir / f"{name}-{port}.log")
    handle.start()
    handle.wait_ready(timeout=600)
    return handle


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, tmp_path_factory):
    # two frontends, as the GPU profiles run them: every e2e test goes through that path
    handle = start_tiny_server(tiny_model_dir, tmp_path_factory.mktemp("logs"),
                               "--api-server-count", "2")
    yield handle
    handle.stop()


@pytest.fixture()
def openai_client(vllm_server):
    from openai import OpenAI

    return OpenAI(base_url=vllm_server.base_url, api_key="unused", max_retries=0, timeout=60)
