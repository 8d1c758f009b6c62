"""What to serve and how: one settings object, one function that turns it into vLLM arguments.

`ServeSettings` is the only input of `build_vllm_args` and `build_vllm_env`; the CLI, the
planner, profiles and the Kubernetes renderer all produce a `ServeSettings` and call these two
functions, so a flag is spelled in exactly one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # the guard's bound on an image header (serving/guard.py)

Dtype = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]


class ServeSettings(BaseModel):
    """Settings of one vLLM OpenAI-compatible server."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model directory or hub id")
    served_model_name: str | None = Field(None, description="name clients send as `model`")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    dtype: Dtype = "auto"
    max_model_len: int | None = Field(None, ge=16)
    max_images: int = Field(4, ge=0, description="images allowed per request")
    max_videos: int = Field(0, ge=0, description="videos allowed per request")
    max_pixels: int | None = Field(
        None, ge=1024, description="pixel budget per image (images are downscaled to fit)")
    api_key: str | None = Field(None, description="passed to vLLM via VLLM_API_KEY, never argv")
    shutdown_timeout: int = Field(30, ge=0, description="seconds vLLM drains on SIGTERM")
    # engine sizing (filled in by the planner; None leaves vLLM's default)
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    quantization: str | None = None
    quantization_config: dict | None = Field(
        None, description="--quantization-config, e.g. layers an online FP8 leaves in BF16")
    kv_cache_dtype: str | None = None
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    mm_processor_kwargs: dict | None = None
    mm_encoder_tp_mode: Literal["weights", "data"] | None = None
    mm_encoder_attn_backend: str | None = None
    load_format: str | None = None
    api_server_count: int | None = Field(None, ge=1, description="frontend processes")
    async_scheduling: bool | None = None
    encoder_cudagraph_budgets: list[int] | None = Field(
        None, description="CUDA graphs for the vision encoder at these token budgets "
                          "(vLLM's V1 model runner only)")
    model_runner: Literal["v1", "v2"] | None = Field(
        None, description="vLLM's model runner (VLLM_USE_V2_MODEL_RUNNER); None: vLLM's choice")
    distributed_executor_backend: Literal["mp", "ray"] | None = None
    # reliability and security (serving/guard.py, SECURITY.md)
    guard: bool = Field(True, description="load qvl's ASGI guard into vLLM (--middleware)")
    max_queued: int | None = Field(
        None, ge=1, description="requests in flight (running + waiting) before new ones get 503 "
                                "+ Retry-After (vLLM's --max-num-queued-reqs)")
    allowed_media_domains: list[str] = Field(
        default_factory=list, description="domains image/video URLs may point to; none: "
                                          "remote media URLs are refused")
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1,
                                  description="largest image header accepted")
    extra_args: list[str] = Field(default_factory=list, description="passed to vLLM verbatim")
    # process environment
    cpu_kv_cache_gib: int | None = Field(
        None, ge=1, description="VLLM_CPU_KVCACHE_SPACE (whole GiB) for vLLM's CPU build")
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model must be a directory or a hub id")
        return v

    @property
    def name(self) -> str:
        """The model name clients send."""
        return self.served_model_name or self.model

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def model_is_local_path(self) -> bool:
        """True when `model` names a local directory (absolute, relative or existing path)."""
        m = self.model
        if m.startswith(("/", "./", "../", "~")) or Path(m).exists():
            return True
        # hub ids are "org/name" with exactly one slash
        return m.count("/") != 1


def build_vllm_args(s: ServeSettings) -> list[str]:
    """The argument list for `vllm serve` (launch.supervisor runs it as `python -m
    vllm.entrypoints.cli.main serve ...`)."""
    args = ["--model", s.model, "--host", s.host, "--port", str(s.port)]
    if s.served_model_name:
        args += ["--served-model-name", s.served_model_name]
    args += ["--dtype", s.dtype]
    if s.max_model_len:
        args += ["--max-model-len", str(s.max_model_len)]
    args += ["--limit-mm-per-prompt",
             json.dumps({"image": s.max_images, "video": s.max_videos}, separators=(",", ":"))]
    args += ["--shutdown-timeout", str(s.shutdown_timeout)]
    if s.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(s.tensor_parallel_size)]
    if s.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(s.pipeline_parallel_size)]
    if s.distributed_executor_backend:
        args += ["--distributed-executor-backend", s.distributed_executor_backend]
    if s.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    if s.max_num_seqs is not None:
        args += ["--max-num-seqs", str(s.max_num_seqs)]
    if s.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    if s.quantization:
        args += ["--quantization", s.quantization]
    if s.quantization_config:
        args += ["--quantization-config", json.dumps(s.quantization_config, separators=(",", ":"))]
    if s.kv_cache_dtype:
        args += ["--kv-cache-dtype", s.kv_cache_dtype]
    if s.enable_prefix_caching is not None:
        args.append("--enable-prefix-caching" if s.enable_prefix_caching
                    else "--no-enable-prefix-caching")
    if s.enable_chunked_prefill is not None:
        args.append("--enable-chunked-prefill" if s.enable_chunked_prefill
                    else "--no-enable-chunked-prefill")
    mm_kwargs = dict(s.mm_processor_kwargs or {})
    if s.max_pixels:
        mm_kwargs["max_pixels"] = s.max_pixels
    if mm_kwargs:
        args += ["--mm-processor-kwargs", json.dumps(mm_kwargs, separators=(",", ":"), sort_keys=True)]
    if s.mm_encoder_tp_mode:
        args += ["--mm-encoder-tp-mode", s.mm_encoder_tp_mode]
    if s.mm_encoder_attn_backend:
        args += ["--mm-encoder-attn-backend", s.mm_encoder_attn_backend]
    if s.load_format:
        args += ["--load-format", s.load_format]
    if s.api_server_count and s.api_server_count > 1:
        args += ["--api-server-count", str(s.api_server_count)]
    if s.async_scheduling is not None:
        args.append("--async-scheduling" if s.async_scheduling else "--no-async-scheduling")
    if s.encoder_cudagraph_budgets:
        args += ["--compilation-config", json.dumps(
            {"cudagraph_mm_encoder": True,
             "encoder_cudagraph_token_budgets": sorted(s.encoder_cudagraph_budgets)},
            separators=(",", ":"))]
    if s.max_queued:
        args += ["--max-num-queued-reqs", str(s.max_queued)]
    if s.allowed_media_domains:
        args += ["--allowed-media-domains", *s.allowed_media_domains]
    if s.guard:
        args += ["--middleware", "serving.guard.Guard"]
    return args + list(s.extra_args)


def build_vllm_env(s: ServeSettings) -> dict[str, str]:
    """Environment variables the vLLM process needs on top of the caller's environment."""
    env = {"HF_HUB_OFFLINE": "1"} if s.model_is_local_path() else {}
    if s.api_key:
        env["VLLM_API_KEY"] = s.api_key
    if s.guard:
        env["QVL_MAX_IMAGE_PIXELS"] = str(s.max_image_pixels)
        if s.max_queued:  # the same bound, split over the frontend processes
            env["QVL_MAX_INFLIGHT"] = str(-(-s.max_queued // (s.api_server_count or 1)))
        env["QVL_ALLOWED_MEDIA_DOMAINS"] = ",".join(s.allowed_media_domains)
    # a redirect could lead an allowed URL to an internal address: vLLM must not follow them
    env["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] = "0"
    env.update(runner_env(s))
    if s.cpu_kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(s.cpu_kv_cache_gib)
    env.update(s.env)
    return env


def runner_env(s: ServeSettings) -> dict[str, str]:
    """The model-runner choice, which vLLM reads only from the environment (pods need it too)."""
    return {"VLLM_USE_V2_MODEL_RUNNER": "1" if s.model_runner == "v2" else "0"} \
        if s.model_runner else {}
