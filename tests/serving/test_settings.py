"""The one function that spells vLLM's flags, checked against vLLM's own parser."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from serving.settings import ServeSettings, build_vllm_args, build_vllm_env


def test_minimal_args():
    args = build_vllm_args(ServeSettings(model="/m"))
    assert args[:6] == ["--model", "/m", "--host", "127.0.0.1", "--port", "8000"]
    i = args.index("--limit-mm-per-prompt")
    assert json.loads(args[i + 1]) == {"image": 4, "video": 0}
    assert args[args.index("--shutdown-timeout") + 1] == "30"
    assert "--tensor-parallel-size" not in args  # defaults are left to vLLM


def test_api_key_goes_to_env_not_argv():
    s = ServeSettings(model="/m", api_key="s3cret")
    assert "s3cret" not in " ".join(build_vllm_args(s))
    assert build_vllm_env(s)["VLLM_API_KEY"] == "s3cret"


def test_pixel_budget_merges_into_mm_processor_kwargs():
    s = ServeSettings(model="/m", max_pixels=1 << 20, mm_processor_kwargs={"fps": 1})
    args = build_vllm_args(s)
    assert json.loads(args[args.index("--mm-processor-kwargs") + 1]) == {
        "fps": 1, "max_pixels": 1048576}


def test_local_models_run_offline_hub_ids_do_not():
    assert build_vllm_env(ServeSettings(model="./m"))["HF_HUB_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in build_vllm_env(ServeSettings(model="Qwen/Qwen3-VL-8B-Instruct"))


@pytest.mark.parametrize("bad", [dict(port=0), dict(model=" "), dict(max_images=-1),
                                 dict(gpu_memory_utilization=1.5), dict(unknown_field=1)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValidationError):
        ServeSettings(**{"model": "/m", **bad})


FULL = ServeSettings(
    model="/m", served_model_name="x", dtype="half", max_model_len=8192, max_images=2,
    max_pixels=602112, tensor_parallel_size=2, gpu_memory_utilization=0.9, max_num_seqs=64,
    max_num_batched_tokens=8192, quantization="awq_marlin", kv_cache_dtype="fp8",
    enable_prefix_caching=True, enable_chunked_prefill=True, mm_encoder_tp_mode="data",
    load_format="dummy", api_server_count=4, async_scheduling=True,
    quantization_config={"ignore": ["re:.*visual.*"]}, encoder_cudagraph_budgets=[1536, 768],
    model_runner="v1", extra_args=["--enforce-eager"])


def test_every_field_is_accepted_by_vllms_own_parser():
    from serving.vllm_parser import parse_serve_args

    ns = parse_serve_args(build_vllm_args(FULL))
    assert ns.tensor_parallel_size == 2 and ns.max_num_seqs == 64
    assert ns.quantization == "awq_marlin" and ns.enforce_eager is True
    assert ns.limit_mm_per_prompt == {"image": 2, "video": 0}
    assert ns.mm_processor_kwargs == {"max_pixels": 602112}
    assert ns.shutdown_timeout == 30 and ns.dtype == "half"
    assert ns.api_server_count == 4 and ns.async_scheduling is True
    cc = ns.compilation_config if isinstance(ns.compilation_config, dict) \
        else vars(ns.compilation_config)
    assert cc["cudagraph_mm_encoder"] is True
    assert cc["encoder_cudagraph_token_budgets"] == [768, 1536]
    assert ns.quantization_config.ignore == ["re:.*visual.*"]


def test_the_model_runner_is_chosen_through_the_environment():
    from serving.settings import build_vllm_env

    assert build_vllm_env(FULL)["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    assert build_vllm_env(FULL.model_copy(update={"model_runner": "v2"}))[
        "VLLM_USE_V2_MODEL_RUNNER"] == "1"
    assert "VLLM_USE_V2_MODEL_RUNNER" not in build_vllm_env(ServeSettings(model="/m"))


def test_vllms_parser_rejects_a_bad_flag():
    from serving.vllm_parser import parse_serve_args

    with pytest.raises(SystemExit):
        parse_serve_args(build_vllm_args(ServeSettings(model="/m", extra_args=["--no-such-flag"])))
