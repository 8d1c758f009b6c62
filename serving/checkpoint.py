"""Random-weight Qwen3-VL checkpoints with the real architecture.

`write_checkpoint(out, shape="tiny")` writes config, safetensors, tokenizer, processors and
chat template into one folder that vLLM serves offline. The tiny shape (~0.6 M parameters) is
the embedded default model of the demo and the tests: vLLM's CPU build serves it in seconds.
The real shapes ("8b", "32b") are for GPU measurements; write them with `weights=False` and
serve with `--load-format dummy` so vLLM draws the weights itself (no 17 GB to write).

Everything is seeded: the same shape and seed give byte-identical weights.
Heavy imports (torch, transformers, tokenizers) happen inside the functions so that importing
this module stays cheap.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

# The added tokens of the real Qwen3-VL tokenizer, in their real order.
SPECIALS: list[tuple[str, bool]] = [  # (content, special)
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
    ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<think>", False), ("</think>", False),
]
REAL_FIRST_SPECIAL_ID = 151643  # <|endoftext|> in the real Qwen tokenizer
REAL_VOCAB_SIZE = 151936

# Real Qwen3-VL chat template, reduced to what the OpenAI chat API sends: system/user/assistant
# messages whose content is a string or a list of text / image / video parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' or c['type'] == 'image_url' or 'image' in c %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' or c['type'] == 'video_url' or 'video' in c %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The load tests' synthetic prompts are drawn from these words; the tokenizer learns each as one
# token (as the real Qwen tokenizer does), so "~50 text tokens" is 50 tokens on the server too.
PROMPT_WORDS = ("image photo scene object color light shadow left right top bottom person table "
                "window street tree car sign text number chart line shape small large red blue "
                "green what where how many describe count read explain").split()

_CORPUS = [
    " " + " ".join(PROMPT_WORDS),
    "The quick brown fox jumps over the lazy dog. Describe this image in detail.",
    "A photo of a cat sitting on a mat. What is in the picture? How many objects?",
    "user assistant system You are a helpful assistant. Answer the question briefly.",
    "0123456789 The image shows a red square, a blue circle and green text on a page.",
] * 50

# Architecture shapes. "tiny" is the smallest shape vLLM's CPU attention accepts
# (head_dim 64; 16 fails with "Unsupported CPU attention configuration").
# "8b" and "32b" are the published Qwen/Qwen3-VL-{8B,32B}-Instruct configs.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=64),
        mrope_section=[16, 8, 8], rope_theta=500000.0,
        vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                    out_hidden_size=128, num_position_embeddings=256,
                    deepstack_visual_indexes=[0]),
        tie_word_embeddings=True, real_vocab=False, dtype="float32"),
    "8b": dict(
        text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128),
        mrope_section=[24, 20, 20], rope_theta=5000000.0,
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                    out_hidden_size=4096, num_position_embeddings=2304,
                    deepstack_visual_indexes=[8, 16, 24]),
        tie_word_embeddings=False, real_vocab=True, dtype="bfloat16"),
    "32b": dict(
        text=dict(hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
                  num_attention_heads=64, num_key_value_heads=8, head_dim=128),
        mrope_section=[24, 20, 20], rope_theta=5000000.0,
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                    out_hidden_size=5120, num_position_embeddings=2304,
                    deepstack_visual_indexes=[8, 16, 24]),
        tie_word_embeddings=False, real_vocab=True, dtype="bfloat16"),
}

# Image processor limits of the real checkpoints (preprocessor_config.json "size").
MIN_PIXELS = 65536
MAX_PIXELS = 16777216


def _token_ids(real_vocab: bool, base_size: int) -> dict[str, int]:
    first = REAL_FIRST_SPECIAL_ID if real_vocab else base_size
    return {t: first + i for i, (t, _) in enumerate(SPECIALS)}


def build_tokenizer(real_vocab: bool):
    """A small trained byte-level BPE with the Qwen special tokens (at their real ids if asked)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_CORPUS, trainers.BpeTrainer(
        vocab_size=1000, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    base = len(vocab)
    ids = _token_ids(real_vocab, base)
    if real_vocab:  # unreachable filler entries so the specials get their real ids
        for i in range(base, REAL_FIRST_SPECIAL_ID):
            vocab[f"<filler{i}>"] = i
    spec["added_tokens"] = [
        {"id": ids[t], "content": t, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": s} for t, s in SPECIALS]
    tok = Tokenizer.from_str(json.dumps(spec))
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None, chat_template=CHAT_TEMPLATE,
        additional_special_tokens=[t for t, s in SPECIALS
                                   if s and t not in ("<|endoftext|>", "<|im_end|>")],
        model_max_length=262144, clean_up_tokenization_spaces=False,
        split_special_tokens=False)
    for t, i in ids.items():
        if hf_tok.convert_tokens_to_ids(t) != i:
            raise RuntimeError(f"tokenizer built wrong id for {t}")
    return hf_tok, ids


def build_config(shape: str, ids: dict[str, int], vocab_size: int):
    import torch
    from transformers import Qwen3VLConfig

    s = SHAPES[shape]
    dtype = getattr(torch, s["dtype"])
    cfg = Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size, max_position_embeddings=262144, rms_norm_eps=1e-6,
            hidden_act="silu", attention_bias=False, attention_dropout=0.0,
            initializer_range=0.02, use_cache=True,
            rope_parameters={"rope_type": "default", "rope_theta": s["rope_theta"],
                             "mrope_section": s["mrope_section"], "mrope_interleaved": True},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=None, dtype=s["dtype"], tie_word_embeddings=s["tie_word_embeddings"],
            **s["text"]),
        vision_config=dict(hidden_act="gelu_pytorch_tanh", in_channels=3, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2,
                           initializer_range=0.02, **s["vision"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=s["tie_word_embeddings"])
    cfg.architectures = ["Qwen3VLForConditionalGeneration"]
    cfg.dtype = dtype
    cfg.text_config.dtype = dtype
    return cfg


def _write_weights(cfg, out: Path, seed: int) -> int:
    """Seeded normal(0, 0.02) matrices, ones for norms, zeros for biases; one safetensors file."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3VLForConditionalGeneration

    with torch.device("meta"):
        meta = Qwen3VLForConditionalGeneration(cfg)
    specs = [(k, tuple(v.shape)) for k, v in meta.state_dict().items()]
    if cfg.tie_word_embeddings:
        specs = [(k, sh) for k, sh in specs if k != "lm_head.weight"]
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in specs:
        t = torch.empty(shape, dtype=torch.float32)
        if name.endswith(".bias"):
            t.zero_()
        elif t.dim() == 1:
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=gen)
        tensors[name] = t.to(cfg.dtype).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return sum(t.numel() for t in tensors.values())


def write_checkpoint(out: str | os.PathLike, shape: str = "tiny", *, weights: bool = True,
                     seed: int = 0, quantization_config: dict | None = None) -> dict[str, Any]:
    """Write a complete checkpoint folder; returns a summary (path, shape, parameter count).

    The folder is written as OUT.partial and renamed at the end, so OUT existing means the
    checkpoint is complete. `quantization_config` (e.g. AWQ) is put into config.json as is,
    for dummy-weight quantized runs on a GPU.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}")
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    final = Path(out)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    s = SHAPES[shape]
    hf_tok, ids = build_tokenizer(s["real_vocab"])
    vocab_size = REAL_VOCAB_SIZE if s["real_vocab"] else max(ids.values()) + 1
    cfg = build_config(shape, ids, vocab_size)
    if quantization_config:
        cfg.quantization_config = quantization_config
    cfg.save_pretrained(tmp)
    n_params = _write_weights(cfg, tmp, seed) if weights else None

    ip = Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    vp = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                               image_mean=[0.5] * 3, image_std=[0.5] * 3)
    proc = Qwen3VLProcessor(image_processor=ip, tokenizer=hf_tok, video_processor=vp,
                            chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(tmp)
    hf_tok.save_pretrained(tmp)
    ip.save_pretrained(tmp)
    vp.save_pretrained(tmp)
    gen_cfg = {"bos_token_id": ids["<|endoftext|>"], "pad_token_id": ids["<|endoftext|>"],
               "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
               "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8}
    (tmp / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2))
    summary = {"path": str(final), "shape": shape, "parameters": n_params,
               "vocab_size": vocab_size, "seed": seed, "weights": weights}
    (tmp / "qvl_checkpoint.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return summary
