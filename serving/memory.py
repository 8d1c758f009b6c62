"""The memory model: what a Qwen3-VL model needs on a GPU, from first principles.

    usable      = card memory x gpu_memory_utilization            (what vLLM may take)
    kv budget   = usable - weights/TP - activation peak - runtime reserve
    kv tokens   = kv budget / KV bytes per token (per GPU)

Weights count every tensor of the checkpoint: quantized linear layers of the language model
at their bits plus group scales/zeros; embeddings, lm_head, norms and the vision tower at 16 bit.
The activation peak is what vLLM's profiling run sees: one chunk of `max_num_batched_tokens`
through the language model, the sampler's logits, and the vision encoder on the largest image.
The runtime reserve covers the CUDA context, cuBLAS/NCCL workspaces and CUDA graphs. The two
reserve constants are calibrated against vLLM's own KV-cache figure on an H200 (see
serving/verified/); the rest is arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.catalog import ModelSpec, QuantFormat

GiB = 1024**3

# Calibrated on the lent H200 against vLLM's "Available KV cache memory" (serving/verified/).
RUNTIME_RESERVE_GIB = 0.55  # non-torch memory (cuBLAS workspaces, NCCL), per GPU
ACTIVATION_FACTOR = 0.75  # scales the analytic activation peak


@dataclass(frozen=True)
class ParamCounts:
    embed: int  # input embeddings
    lm_head: int  # 0 when tied to the embeddings
    text_linear: int  # quantizable linear weights of the language model (attention + MLP/experts)
    text_other: int  # norms, router
    vision: int  # the whole vision tower incl. mergers

    @property
    def total(self) -> int:
        return self.embed + self.lm_head + self.text_linear + self.text_other + self.vision


def param_counts(m: ModelSpec) -> ParamCounts:
    t, v, V = m.text, m.vision, m.vocab_size
    h, hd = t.hidden_size, t.head_dim
    attn = h * t.num_attention_heads * hd * 2 + h * t.num_key_value_heads * hd * 2  # q,o + k,v
    if t.is_moe:
        mlp = t.num_experts * 3 * h * t.moe_intermediate_size
        router = h * t.num_experts
    else:
        mlp = 3 * h * t.intermediate_size
        router = 0
    norms = 2 * h + 2 * hd  # input/post-attention RMSNorm, q_norm, k_norm
    layers = t.num_hidden_layers
    vh, vi, out = v.hidden_size, v.intermediate_size, v.out_hidden_size
    patch = v.in_channels * v.temporal_patch_size * v.patch_size**2 * vh + vh
    block = 4 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + (vh * vi + vi) + (vi * vh + vh)
    merged = vh * v.spatial_merge_size**2
    merger_mlp = (merged * merged + merged) + (merged * out + out)
    merger = 2 * vh + merger_mlp  # LayerNorm before the shuffle
    deepstack = len(v.deepstack_visual_indexes) * (2 * merged + merger_mlp)  # norm after it
    vision = patch + v.num_position_embeddings * vh + v.depth * block + merger + deepstack
    return ParamCounts(embed=V * h, lm_head=0 if t.tie_word_embeddings else V * h,
                       text_linear=layers * (attn + mlp),
                       text_other=layers * (norms + router) + h, vision=vision)


def bytes_per_quantized_weight(q: QuantFormat) -> float:
    """Storage of one quantized weight incl. its share of group scales and packed zero points."""
    if q.bits >= 16:
        return 2.0
    if q.group_size is None:  # per-channel / 128x128-block FP8: scales are negligible
        return q.bits / 8
    # one fp16 scale per group; AWQ/GPTQ also store packed 4-bit zero points (GPTQ even when sym)
    zeros = 0.5 if q.method in ("awq", "gptq") else 0.0
    return q.bits / 8 + (2.0 + zeros) / q.group_size


def weight_bytes(m: ModelSpec, q: QuantFormat, tp: int = 1) -> float:
    """Weights per GPU under tensor parallel `tp` (vocab and linear layers are split; norms and
    the vision tower are replicated when the encoder runs data-parallel, which we plan for)."""
    p = param_counts(m)
    split = (p.embed + p.lm_head) * 2 + p.text_linear * bytes_per_quantized_weight(q)
    replicated = p.text_other * 2 + p.vision * 2
    return split / tp + replicated


def kv_bytes_per_token(m: ModelSpec, tp: int = 1, kv_cache_bytes: int = 2) -> int:
    """2 (K and V) x layers x KV heads (per GPU) x head_dim x bytes."""
    t = m.text
    kv_heads = max(1, t.num_key_value_heads // tp)
    return 2 * t.num_hidden_layers * kv_heads * t.head_dim * kv_cache_bytes


def activation_bytes(m: ModelSpec, *, max_num_batched_tokens: int, max_num_seqs: int,
                     max_image_patches: int, tp: int = 1) -> float:
    """Peak of vLLM's profiling run (16-bit activations, fp32 logits)."""
    t, v = m.text, m.vision
    inter = (t.moe_intermediate_size * t.num_experts_per_tok if t.is_moe
             else t.intermediate_size)
    # gate_up output (2 x inter) + its activation (inter) + residual/attention buffers (~6 h)
    per_token = (3 * inter / tp + 6 * t.hidden_size) * 2
    lm = max_num_batched_tokens * per_token
    logits = max_num_seqs * m.vocab_size * 4 * 2 / tp  # logits + sampler's probabilities
    # vision: the largest image's patches through one block (MLP dominates) + encoder outputs
    vision = max_image_patches * (v.intermediate_size + 4 * v.hidden_size) * 2 * 2
    return ACTIVATION_FACTOR * (lm + logits + vision)


def kv_cache_bytes_available(usable_bytes: float, weights: float, activation: float) -> float:
    return usable_bytes - weights - activation - RUNTIME_RESERVE_GIB * GiB
