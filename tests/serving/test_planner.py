"""Planner numbers against hand-computed cases; profiles against vLLM's own parser."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serving import memory
from serving.catalog import find_card, find_model, find_quant, models
from serving.planner import make_plan
from serving.profiles import load_profile, min_vram_gib, profile_names
from serving.settings import build_vllm_args

GIB = 2**30


def test_kv_bytes_per_token_by_hand():
    m8 = find_model("Qwen/Qwen3-VL-8B-Instruct")
    assert memory.kv_bytes_per_token(m8) == 2 * 36 * 8 * 128 * 2 == 147456  # 144 KiB
    m32 = find_model("32b")
    assert memory.kv_bytes_per_token(m32) == 2 * 64 * 8 * 128 * 2
    assert memory.kv_bytes_per_token(m32, tp=2) == 2 * 64 * 4 * 128 * 2  # KV heads split
    moe = find_model("235b-a22b")  # 4 KV heads: replicated beyond TP=4
    assert memory.kv_bytes_per_token(moe, tp=8) == 2 * 94 * 1 * 128 * 2


def test_param_counts_match_the_transformers_model():
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    m = find_model("8b")
    text = m.text.model_dump(exclude_none=True)
    tie = text.pop("tie_word_embeddings")
    cfg = Qwen3VLConfig(text_config=dict(vocab_size=m.vocab_size, **text),
                        vision_config=m.vision.model_dump(), tie_word_embeddings=tie)
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(cfg)
    assert memory.param_counts(m).total == sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if "visual" in n)
    assert memory.param_counts(m).vision == vision


@pytest.mark.parametrize("key", list(models()))
def test_param_counts_agree_with_model_cards(key):
    m = models()[key]
    assert abs(memory.param_counts(m).total / 1e9 - m.published_params_b) / m.published_params_b < 0.02


def test_weights_by_hand():
    m, p = find_model("8b"), memory.param_counts(find_model("8b"))
    assert memory.weight_bytes(m, find_quant("bf16")) == p.total * 2
    # AWQ: 4-bit linear layers + one fp16 scale and a packed 4-bit zero per 128 weights
    awq = (p.embed + p.lm_head) * 2 + p.text_linear * (0.5 + 2.5 / 128) + (p.text_other + p.vision) * 2
    assert memory.weight_bytes(m, find_quant("awq")) == pytest.approx(awq)
    assert 6.5 < awq / GIB < 7.0


def test_8b_awq_on_t4_fits_in_half_precision():
    p = make_plan("Qwen/Qwen3-VL-8B-Instruct", "T4", "awq")
    assert p.fits and p.dtype == "half" and p.quantization == "awq"
    assert p.kv_bytes_per_token == 147456 and p.tensor_parallel_size == 1
    assert p.image_tokens == 1024 // 32 * 768 // 32 + 2
    assert p.max_num_seqs == p.kv_cache_tokens // p.seq_tokens
    args = p.vllm_args
    assert args[args.index("--dtype") + 1] == "half"
    assert args[args.index("--mm-encoder-attn-backend") + 1] == "TORCH_SDPA"  # Turing ViT


def test_8b_bf16_on_t4_does_not_fit_and_says_why():
    p = make_plan("8b", "t4", "bf16", tp=1)
    assert not p.fits
    assert "weights 16.3 GiB" in p.reason and "T4" in p.reason
    assert any(a.startswith("4-bit AWQ") for a in p.alternatives)
    assert any("TP=2" in a for a in p.alternatives)
    assert p.vllm_args == []


def test_smallest_tp_that_fits():
    assert make_plan("8b", "t4", "bf16", tp=None).tensor_parallel_size == 2
    assert make_plan("235b-a22b", "h200", "fp8", tp=None).tensor_parallel_size == 2


def test_32b_fp8_on_one_80gb_card():
    p = make_plan("32b", "h100", "fp8")
    assert p.fits and p.tensor_parallel_size == 1 and p.quantization == "fp8"
    assert p.max_model_len == 32768 and p.kv_cache_tokens > 32768
    assert p.dtype == "bfloat16"
    tp2 = make_plan("32b", "h100", "fp8", tp=2)
    assert "--mm-encoder-tp-mode" in tp2.vllm_args and tp2.kv_cache_tokens > 2 * p.kv_cache_tokens


def test_context_request_that_cannot_fit():
    p = make_plan("8b", "t4", "awq", max_model_len=200_000)
    assert not p.fits and "max_model_len 200000" in p.reason


def test_bad_names_are_explained():
    with pytest.raises(ValueError, match="unknown GPU 'v100'"):
        find_card("v100")
    with pytest.raises(ValueError, match="unknown model"):
        find_model("llama-7b")
    with pytest.raises(ValueError, match="does not divide"):
        make_plan("8b", "h100", "bf16", tp=3)


@pytest.mark.parametrize("name", profile_names())
def test_every_profile_is_accepted_by_vllms_parser(name):
    from serving.vllm_parser import parse_serve_args

    prof = load_profile(name)
    settings = prof.settings()
    ns = parse_serve_args(build_vllm_args(settings))
    assert ns.model == settings.model
    if not prof.is_cpu:
        plan = prof.plan()
        assert plan.fits and ns.tensor_parallel_size == prof.tp
        assert prof.min_vram_gib == min_vram_gib(plan), "update min_vram_gib in the profile"
        assert find_card(prof.card).memory_gib >= prof.min_vram_gib


def test_bad_profile_is_explained(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: 8b\ncard: t4\ntp: zero\n")
    with pytest.raises(ValueError, match="is invalid"):
        load_profile(str(bad))
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        load_profile("nope")


def test_qvl_plan_json():
    r = subprocess.run([sys.executable, "-m", "launch.cli", "plan", "--gpu", "T4", "--model",
                        "Qwen/Qwen3-VL-8B-Instruct", "--quant", "awq", "--json"],
                       capture_output=True, text=True, check=True)
    plan = json.loads(r.stdout)
    assert plan["fits"] is True and plan["dtype"] == "half"
    assert plan["kv_bytes_per_token"] == 147456 and plan["quantization"] == "awq"
    for key in ("tensor_parallel_size", "max_model_len", "max_num_seqs", "kv_cache_tokens",
                "weights_gib", "vllm_args"):
        assert key in plan


def test_qvl_plan_matrix_and_no_fit_exit_code():
    r = subprocess.run([sys.executable, "-m", "launch.cli", "plan"], capture_output=True,
                       text=True, check=True)
    assert "235b-a22b" in r.stdout and "t4" in r.stdout
    r = subprocess.run([sys.executable, "-m", "launch.cli", "plan", "--gpu", "t4", "--quant",
                        "bf16"], capture_output=True, text=True)
    assert r.returncode == 1 and "NO - weights" in r.stdout and "would fit instead" in r.stdout


def test_encoder_graph_budgets_are_whole_images_up_to_the_step_budget():
    from serving.planner import MAX_ENCODER_GRAPHS, encoder_budgets

    assert encoder_budgets(768, 16384) == [768 * k for k in range(1, 22)]  # 21 x 1024x768
    small = encoder_budgets(64, 16384)  # 256 images fit: coarser steps, still whole images
    assert len(small) == MAX_ENCODER_GRAPHS and small[0] == 512 and small[-1] == 16384
    assert encoder_budgets(0, 16384) == [] and encoder_budgets(20000, 16384) == []


def test_hopper_plans_run_the_encoder_in_cuda_graphs_on_the_v1_runner():
    from serving.settings import build_vllm_env
    from serving.vllm_parser import parse_serve_args

    plan = make_plan("8b", "h200", "fp8")
    s = plan.settings()
    assert s.api_server_count == 8 and s.model_runner == "v1"
    assert build_vllm_env(s)["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    ns = parse_serve_args(build_vllm_args(s))
    cc = ns.compilation_config
    cc = cc if isinstance(cc, dict) else vars(cc)
    assert cc["cudagraph_mm_encoder"] is True
    assert cc["encoder_cudagraph_token_budgets"] == [768 * k for k in range(1, 22)]
    # not measured elsewhere: other cards and TP > 1 keep vLLM's runner and an eager encoder
    for other in (make_plan("8b", "l4", "fp8"), make_plan("32b", "h100", "fp8", tp=2)):
        assert other.encoder_budgets == [] and other.settings().model_runner is None
        assert "VLLM_USE_V2_MODEL_RUNNER" not in build_vllm_env(other.settings())


def test_fp8_on_bf16_weights_leaves_the_vision_tower_in_bf16():
    from serving.vllm_parser import parse_serve_args

    plan = make_plan("8b", "h200", "fp8")
    assert plan.settings().quantization == "fp8"  # the official FP8 checkpoint brings its own
    s = plan.settings(bf16_weights=True)
    assert s.quantization == "fp8_per_tensor"
    ns = parse_serve_args(build_vllm_args(s))
    assert ns.quantization == "fp8_per_tensor"
    qc = ns.quantization_config
    assert (qc["ignore"] if isinstance(qc, dict) else qc.ignore) == ["re:.*visual.*"]
    assert make_plan("8b", "h200", "bf16").settings(bf16_weights=True).quantization is None
