"""The planner: which settings a Qwen3-VL model needs on a card, and whether it fits.

`make_plan(model, card, quant)` applies the memory model (serving/memory.py) and the rules per
compute capability below, and returns a `Plan` whose `settings()` is the `ServeSettings` that
`qvl serve` runs. Rules were checked against the vLLM source of the versions named in RULES.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from qvl_client.vision import image_tokens, vision_patches
from serving import memory
from serving.catalog import (CardSpec, ModelSpec, QuantFormat, checkpoints, find_card,
                             find_model, find_quant, models, quant_formats)
from serving.settings import ServeSettings, build_vllm_args

DEFAULT_MAX_PIXELS = 1024 * 1024  # 1024 merged tokens per image at most
DEFAULT_CONTEXT = 32768
MODEL_MAX_CONTEXT = 262144
MAX_NUM_SEQS_CAP = 512

# Each rule, what it does, and the vLLM versions whose source it was checked against.
RULES = {
    "dtype": "bfloat16 where the card has it, else half (sm < 80 has no bf16) — vLLM 0.26.0, 0.32.0",
    "awq": "--quantization awq: vLLM's AutoAWQ config picks the Marlin kernel on CUDA sm >= 75 "
           "(T4 included) when shapes align, else the plain AWQ GEMM — vLLM 0.26.0, 0.32.0 "
           "(before 0.2x, awq_marlin needed sm >= 80)",
    "gptq": "--quantization gptq: AutoGPTQ, Marlin on sm >= 75 — vLLM 0.26.0, 0.32.0",
    "w4a16": "compressed-tensors W4A16 (Marlin), min capability 75 — vLLM 0.26.0, 0.32.0",
    "fp8": "--quantization fp8: W8A8 FP8 on sm >= 89 (L4, H100, H200); weight-only FP8 via "
           "Marlin on sm 75-86 (no FP8 compute) — vLLM 0.26.0, 0.32.0",
    "vit_attn": "vision encoder attention TORCH_SDPA on sm < 80 (FlashAttention needs sm >= 80) "
                "— vLLM 0.26.0 get_vit_attn_backend",
    "mm_tp": "--mm-encoder-tp-mode data when TP > 1: the ~0.6 B vision tower is replicated and "
             "each GPU encodes its own images instead of all-reducing every layer — vLLM >= 0.11",
    "frontend": "cards with >= 40 GiB: 4 API-server processes (image decoding and the HF "
                "processor run in parallel frontends) and --async-scheduling (CPU scheduling "
                "overlaps GPU steps) — vLLM 0.26.0, 0.32.0",
    "frontend_h": "sm >= 90 with >= 75 GiB (H100, H200): 8 API-server processes instead of 4 "
                  "— the HF processor costs ~30 ms of one core per 1024x768 image and these "
                  "cards serve ~30 images/s; the H200 runs of 2026-11-21 used 8 (not compared "
                  "with 4 in one call) — vLLM 0.26.0",
    "encoder_graphs": "sm >= 90 with >= 75 GiB, TP=1: CUDA graphs for the vision encoder "
                      "(--compilation-config cudagraph_mm_encoder, token budgets of whole "
                      "images of the workload up to max_num_batched_tokens), which needs vLLM's "
                      "V1 model runner (VLLM_USE_V2_MODEL_RUNNER=0): run eagerly, launching the "
                      "encoder costs the engine thread ~8 ms of CPU per 1024x768 image (H200, "
                      "vLLM 0.26.0); with the graphs, same throughput, the engine thread at ~50 % "
                      "instead of ~75 % and p90 TTFT at c=96 1.91 s instead of 2.27 s (one "
                      "call); they take ~13 GiB",
    "fp8_vit": "FP8 applied at load time to BF16 weights: --quantization fp8_per_tensor with "
               "the vision tower left in BF16 (--quantization-config ignore re:.*visual.*), as "
               "FP8 recipes for Qwen3-VL do; per-tensor dynamic activation scales cost the tower "
               "~2.8 ms per image of reductions on the H200, FP8 saves its GEMMs ~1.1 ms "
               "— vLLM 0.26.0, 0.32.0",
    "pixels": "--mm-processor-kwargs max_pixels bounds both real images and the encoder's "
              "profiling run (the unbounded default profiles a 16.7 MP image) — vLLM 0.32.0",
}


class Workload(BaseModel):
    """The request shape the plan is sized for."""
    images: int = Field(1, ge=0)
    image_width: int = Field(1024, gt=0)
    image_height: int = Field(768, gt=0)
    text_tokens: int = Field(50, ge=0)
    output_tokens: int = Field(128, ge=1)


class Plan(BaseModel):
    fits: bool
    reason: str
    model: str
    hub_id: str
    card: str
    quant: str
    dtype: str
    quantization: str | None
    tensor_parallel_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    max_pixels: int
    kv_cache_tokens: int
    kv_bytes_per_token: int
    weights_gib: float
    activation_gib: float
    kv_cache_gib: float
    usable_gib: float
    image_tokens: int
    seq_tokens: int
    rules: list[str] = Field(default_factory=list)
    checkpoint: str | None = None
    encoder_budgets: list[int] = Field(default_factory=list)
    alternatives: list[str] = Field(default_factory=list)
    vllm_args: list[str] = Field(default_factory=list)

    def _big_card(self) -> bool:
        return find_card(self.card).memory_gib >= 40

    def _frontends(self) -> int | None:
        return 8 if _hopper_class(find_card(self.card)) else 4 if self._big_card() else None

    def settings(self, *, bf16_weights: bool | None = None, **overrides) -> ServeSettings:
        """The `ServeSettings` of this plan; `overrides` replace fields. `bf16_weights`: the
        served weights are BF16 (default: when the plan's checkpoint is the BF16 repo), so an
        FP8 plan quantizes at load time, leaving the vision tower in BF16."""
        if bf16_weights is None:
            bf16_weights = self.checkpoint in (None, self.hub_id)
        quantization, quant_config = self.quantization, None
        if self.quantization == "fp8" and bf16_weights:
            quantization, quant_config = "fp8_per_tensor", {"ignore": [VISION_TOWER]}
        fields = dict(
            model=self.checkpoint or self.hub_id, dtype=self.dtype,
            max_model_len=self.max_model_len, max_pixels=self.max_pixels,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization, max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens, quantization=quantization,
            quantization_config=quant_config,
            enable_prefix_caching=True, enable_chunked_prefill=True,
            mm_encoder_tp_mode="data" if self.tensor_parallel_size > 1 else None,
            mm_encoder_attn_backend="TORCH_SDPA" if find_card(self.card).sm < 80 else None,
            api_server_count=self._frontends(),
            async_scheduling=True if self._big_card() else None,
            encoder_cudagraph_budgets=self.encoder_budgets or None,
            model_runner="v1" if self.encoder_budgets else None)
        fields.update(overrides)
        return ServeSettings(**fields)


VISION_TOWER = "re:.*visual.*"  # vLLM's module names of the Qwen3-VL vision tower
MAX_ENCODER_GRAPHS = 32


def _hopper_class(c: CardSpec) -> bool:
    return c.sm >= 90 and c.memory_gib >= 75


def encoder_budgets(image_tok: int, batched: int) -> list[int]:
    """Token budgets for the vision encoder's CUDA graphs: whole images of the workload
    (k x image_tok, so a batch of them runs unpadded) up to the step's token budget; at most
    MAX_ENCODER_GRAPHS of them (coarser steps for small images)."""
    if image_tok <= 0 or image_tok > batched:
        return []
    step = image_tok * -(-(batched // image_tok) // MAX_ENCODER_GRAPHS)
    return list(range(step, batched + 1, step))


def _quant_arg(q: QuantFormat) -> tuple[str | None, list[str]]:
    if q.method is None:
        return None, []
    return q.method, [RULES["w4a16" if q.key == "w4a16" else q.method]]


def _checkpoint(m: ModelSpec, q: QuantFormat) -> str:
    """The repo to serve: an official one of that format first, then a community one, else the
    BF16 repo (FP8 can be applied to BF16 weights at load time)."""
    repos = [k for k in checkpoints() if k.size == m.key and k.quant == q.key
             and not k.repo.startswith("(")]
    repos.sort(key=lambda k: k.kind != "official")
    return repos[0].repo if repos else m.hub_id


def tp_divides(heads: int, kv_heads: int, tp: int) -> bool:
    """TP splits the attention heads evenly and the KV heads evenly (or replicates them)."""
    return heads % tp == 0 and (kv_heads % tp == 0 or tp % kv_heads == 0)


def _tp_ok(m: ModelSpec, tp: int) -> bool:
    return tp_divides(m.text.num_attention_heads, m.text.num_key_value_heads, tp)


def _batched_tokens(card: CardSpec, tp: int, image_tok: int) -> int:
    mem = card.memory_gib * tp
    base = 16384 if mem >= 70 else 8192 if mem >= 40 else 4096
    return max(base, image_tok + 1024)


def make_plan(model: str | ModelSpec, card: str | CardSpec, quant: str | QuantFormat | None = None,
              *, tp: int | None = 1, max_model_len: int | None = None,
              workload: Workload | None = None, gpu_memory_utilization: float = 0.90,
              max_pixels: int = DEFAULT_MAX_PIXELS, max_tp: int = 8,
              suggest: bool = True) -> Plan:
    """Plan `model` on `card` at `tp` GPUs; tp=None picks the smallest TP that fits."""
    m = model if isinstance(model, ModelSpec) else find_model(model)
    c = card if isinstance(card, CardSpec) else find_card(card)
    q = quant if isinstance(quant, QuantFormat) else find_quant(quant)
    w = workload or Workload()
    if tp is None:
        plan = None
        for cand in (1, 2, 4, 8):
            if cand > max_tp or not _tp_ok(m, cand):
                continue
            plan = _plan_at(m, c, q, cand, max_model_len, w, gpu_memory_utilization, max_pixels)
            if plan.fits:
                break
    else:
        if not _tp_ok(m, tp):
            raise ValueError(f"tensor parallel size {tp} does not divide {m.key}'s "
                             f"{m.text.num_attention_heads} attention heads / "
                             f"{m.text.num_key_value_heads} KV heads")
        plan = _plan_at(m, c, q, tp, max_model_len, w, gpu_memory_utilization, max_pixels)
    if not plan.fits and suggest:
        plan.alternatives = nearest_fits(m, c, q, plan.tensor_parallel_size, w,
                                         gpu_memory_utilization, max_pixels)
    return plan


def _plan_at(m: ModelSpec, c: CardSpec, q: QuantFormat, tp: int, want_len: int | None,
             w: Workload, util: float, max_pixels: int) -> Plan:
    img_tok = image_tokens(w.image_width, w.image_height, max_pixels=max_pixels)
    seq_tokens = w.images * img_tok + w.text_tokens + w.output_tokens
    # the largest image the pixel budget admits (what vLLM profiles the encoder with)
    biggest = image_tokens(8192, 8192, max_pixels=max_pixels)
    patches = vision_patches(8192, 8192, max_pixels=max_pixels)
    batched = _batched_tokens(c, tp, biggest)
    weights = memory.weight_bytes(m, q, tp)
    kv_per_tok = memory.kv_bytes_per_token(m, tp)
    usable = c.memory_gib * util * memory.GiB
    dtype = "bfloat16" if c.bf16 else "half"
    quant_arg, rules = _quant_arg(q)
    rules = [RULES["dtype"], *rules, RULES["pixels"]]
    if c.sm < 80:
        rules.append(RULES["vit_attn"])
    if tp > 1:
        rules.append(RULES["mm_tp"])
    if c.memory_gib >= 40:
        rules.append(RULES["frontend"])
    enc_tok = image_tokens(w.image_width, w.image_height, max_pixels=max_pixels,
                           with_markers=False)  # the encoder's output per image
    # measured with one GPU per engine only (the data-parallel encoder of TP > 1 is not)
    budgets = encoder_budgets(enc_tok, batched) if _hopper_class(c) and w.images and tp == 1 \
        else []
    if _hopper_class(c):
        rules.append(RULES["frontend_h"])
    if budgets:
        rules.append(RULES["encoder_graphs"])
    checkpoint = _checkpoint(m, q)
    if q.bits < 8 and checkpoint == m.hub_id:
        rules.append(f"no known {q.key} checkpoint of {m.key}: quantize {m.hub_id} (GPTQModel, "
                     "llm-compressor) and pass the result with --model; the memory numbers hold")
    # sizing max_num_seqs needs the KV budget, which needs the activation peak of max_num_seqs:
    # size with the cap, then recompute the logits share with the final value.
    seqs = MAX_NUM_SEQS_CAP
    for _ in range(2):
        act = memory.activation_bytes(m, max_num_batched_tokens=batched, max_num_seqs=seqs,
                                      max_image_patches=patches, tp=tp)
        kv_bytes = memory.kv_cache_bytes_available(usable, weights, act)
        kv_tokens = max(0, int(kv_bytes // kv_per_tok))
        seqs = max(1, min(MAX_NUM_SEQS_CAP, kv_tokens // max(seq_tokens, 1)))
    target = want_len or DEFAULT_CONTEXT
    max_len = min(target, MODEL_MAX_CONTEXT, kv_tokens // 1024 * 1024 or kv_tokens)
    fits, reason = True, "fits"
    gib = memory.GiB
    if weights + act + memory.RUNTIME_RESERVE_GIB * gib >= usable:
        fits = False
        reason = (f"weights {weights / gib:.1f} GiB + activations {act / gib:.1f} GiB + runtime "
                  f"{memory.RUNTIME_RESERVE_GIB:.1f} GiB exceed the {usable / gib:.1f} GiB vLLM may "
                  f"use on {c.name} ({c.memory_gib:g} GiB x {util:g})"
                  + (f" per GPU at TP={tp}" if tp > 1 else ""))
    elif kv_tokens < seq_tokens:
        fits = False
        reason = (f"the KV cache would hold {kv_tokens} tokens, less than one request of "
                  f"{seq_tokens} tokens")
    elif want_len and max_len < want_len:
        fits = False
        reason = f"max_model_len {want_len} needs {want_len} KV tokens; only {kv_tokens} fit"
    plan = Plan(
        fits=fits, reason=reason, model=m.key, hub_id=m.hub_id, card=c.key, quant=q.key,
        dtype=dtype, quantization=quant_arg, tensor_parallel_size=tp,
        max_model_len=max(max_len, 0), max_num_seqs=seqs, max_num_batched_tokens=batched,
        gpu_memory_utilization=util, max_pixels=max_pixels, kv_cache_tokens=kv_tokens,
        kv_bytes_per_token=kv_per_tok, weights_gib=round(weights / gib, 2),
        activation_gib=round(act / gib, 2), kv_cache_gib=round(max(kv_bytes, 0) / gib, 2),
        usable_gib=round(usable / gib, 2), image_tokens=img_tok, seq_tokens=seq_tokens,
        rules=rules, checkpoint=checkpoint, encoder_budgets=budgets)
    if q.key == "fp8" and checkpoint == m.hub_id:
        plan.rules.append(RULES["fp8_vit"])
    if fits:
        plan.vllm_args = build_vllm_args(plan.settings())
    return plan


def nearest_fits(m: ModelSpec, c: CardSpec, q: QuantFormat, tp: int, w: Workload,
                 util: float, max_pixels: int) -> list[str]:
    """What would fit instead: 4-bit of the same size, more GPUs, a smaller size."""
    out = []
    if q.bits > 4:
        p = make_plan(m, c, "awq", tp=1, workload=w, gpu_memory_utilization=util,
                      max_pixels=max_pixels, suggest=False)
        if p.fits:
            out.append(f"4-bit AWQ: {m.key} awq on 1x {c.key} ({p.max_num_seqs} concurrent)")
    for more in (2, 4, 8):
        if more > tp and _tp_ok(m, more):
            p = _plan_at(m, c, q, more, None, w, util, max_pixels)
            if p.fits:
                out.append(f"tensor parallel: {m.key} {q.key} on {more}x {c.key} (TP={more}, "
                           f"{p.max_num_seqs} concurrent)")
                break
    sizes = [k for k, s in models().items()
             if memory.param_counts(s).total < memory.param_counts(m).total]
    for k in sorted(sizes, key=lambda k: -memory.param_counts(models()[k]).total):
        p = _plan_at(models()[k], c, q, 1, None, w, util, max_pixels)
        if p.fits:
            out.append(f"smaller model: {k} {q.key} on 1x {c.key} ({p.max_num_seqs} concurrent)")
            break
    return out


def matrix(workload: Workload | None = None, util: float = 0.90) -> list[Plan]:
    """Every size x quant x card at TP=1: the computed version of the usual sizing table."""
    from serving.catalog import cards

    return [make_plan(m, c, q, tp=1, workload=workload, gpu_memory_utilization=util,
                      suggest=False)
            for m in models() for q in quant_formats() for c in cards()]
