"""The tiny checkpoint: real Qwen3-VL architecture, deterministic, complete."""

from __future__ import annotations

import hashlib
import json

from serving.checkpoint import write_checkpoint


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_tiny_checkpoint_is_complete_and_seeded(tmp_path):
    a = write_checkpoint(tmp_path / "a", "tiny", seed=0)
    b = write_checkpoint(tmp_path / "b", "tiny", seed=0)
    c = write_checkpoint(tmp_path / "c", "tiny", seed=1)
    pa, pb, pc = (tmp_path / n / "model.safetensors" for n in "abc")
    assert sha(pa) == sha(pb) != sha(pc)
    assert a["parameters"] == b["parameters"] and 100_000 < a["parameters"] < 2_000_000
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json", "video_preprocessor_config.json",
            "generation_config.json", "chat_template.jinja"} <= files
    assert not (tmp_path / "a.partial").exists()
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert cfg["text_config"]["head_dim"] == 64  # what vLLM's CPU attention supports
    assert cfg["vision_config"]["patch_size"] == 16
    assert cfg["vision_config"]["spatial_merge_size"] == 2


def test_tokenizer_and_template_produce_vision_tokens(tmp_path):
    from transformers import AutoProcessor

    write_checkpoint(tmp_path / "m", "tiny")
    proc = AutoProcessor.from_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert proc.tokenizer.convert_tokens_to_ids("<|image_pad|>") == cfg["image_token_id"]


def test_real_shape_without_weights(tmp_path):
    s = write_checkpoint(tmp_path / "8b", "8b", weights=False)
    assert s["parameters"] is None and not (tmp_path / "8b" / "model.safetensors").exists()
    cfg = json.loads((tmp_path / "8b" / "config.json").read_text())
    assert cfg["text_config"]["num_hidden_layers"] == 36
    assert cfg["text_config"]["num_key_value_heads"] == 8
    assert cfg["image_token_id"] == 151655 and cfg["text_config"]["vocab_size"] == 151936


def test_load_test_prompts_are_one_token_per_word():
    """The workload's "~N text tokens" must be N tokens on the server too (the real Qwen
    tokenizer has these common words as single tokens; the generated one learns them)."""
    from loadtests.workload import Workload, build_requests
    from serving.checkpoint import build_tokenizer

    for real_vocab in (False, True):
        tok, _ = build_tokenizer(real_vocab)
        for req in build_requests(Workload(images_per_request=0, text_tokens=50), "m", 5):
            prompt = req.body["messages"][0]["content"][-1]["text"]
            assert len(prompt.split()) == 50
            assert 50 <= len(tok(prompt)["input_ids"]) <= 52, prompt
