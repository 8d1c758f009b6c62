"""Model and card facts, read once from the data files beside this module."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

DATA = Path(__file__).parent / "catalog"


class TextShape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool
    intermediate_size: int | None = None  # dense
    moe_intermediate_size: int | None = None  # MoE
    num_experts: int | None = None
    num_experts_per_tok: int | None = None

    @property
    def is_moe(self) -> bool:
        return bool(self.num_experts)


class VisionShape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    num_position_embeddings: int
    deepstack_visual_indexes: list[int]
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    in_channels: int = 3


class ModelSpec(BaseModel):
    key: str
    hub_id: str
    published_params_b: float
    vocab_size: int
    text: TextShape
    vision: VisionShape


class QuantFormat(BaseModel):
    key: str
    bits: int
    method: str | None
    group_size: int | None = None
    zero_point: bool = False
    note: str | None = None


class Checkpoint(BaseModel):
    size: str
    quant: str
    repo: str
    kind: str


class CardSpec(BaseModel):
    key: str
    name: str
    memory_gib: float
    compute_capability: str
    bf16: bool
    fp8: bool
    bandwidth_gbs: float
    tflops_16: float
    price_hour: float
    price_source: str
    price_date: str
    measured_tflops_16: float | None = None
    k8s_gpu_products: list[str] = []

    @property
    def sm(self) -> int:
        major, minor = self.compute_capability.split(".")
        return int(major) * 10 + int(minor)


def _load(name: str) -> dict:
    return yaml.safe_load((DATA / name).read_text())


@cache
def models() -> dict[str, ModelSpec]:
    d = _load("models.yaml")
    common = d["vision_common"]
    return {k: ModelSpec(key=k, hub_id=v["hub_id"], published_params_b=v["published_params_b"],
                         vocab_size=d["vocab_size"], text=TextShape(**v["text"]),
                         vision=VisionShape(**{**common, **v["vision"]}))
            for k, v in d["models"].items()}


@cache
def quant_formats() -> dict[str, QuantFormat]:
    return {k: QuantFormat(key=k, **v) for k, v in _load("models.yaml")["quant_formats"].items()}


@cache
def checkpoints() -> list[Checkpoint]:
    return [Checkpoint(**c) for c in _load("models.yaml")["checkpoints"]]


@cache
def cards() -> dict[str, CardSpec]:
    return {k: CardSpec(key=k, **v) for k, v in _load("cards.yaml")["cards"].items()}


def find_model(name: str) -> ModelSpec:
    """By key ("8b"), hub id ("Qwen/Qwen3-VL-8B-Instruct") or a quantized repo of that size."""
    n = name.lower().strip()
    for m in models().values():
        if n in (m.key, m.hub_id.lower()):
            return m
    for c in checkpoints():
        if n == c.repo.lower():
            return models()[c.size]
    for m in sorted(models().values(), key=lambda m: -len(m.key)):  # "qwen3-vl-8b-..." forms
        if f"-{m.key}-" in n + "-" or n.endswith(m.key):
            return m
    raise ValueError(f"unknown model {name!r}: use one of {', '.join(models())} or a Qwen3-VL "
                     "hub id such as Qwen/Qwen3-VL-8B-Instruct")


def find_card(name: str) -> CardSpec:
    n = name.lower().replace(" ", "").replace("nvidia", "").replace("geforce", "")
    aliases = {"a100": "a100-80g", "3090": "rtx3090", "h100-80g": "h100", "a10": "a10g"}
    n = aliases.get(n, n)
    if n in cards():
        return cards()[n]
    raise ValueError(f"unknown GPU {name!r}: use one of {', '.join(cards())}")


def find_quant(name: str | None) -> QuantFormat:
    n = (name or "bf16").lower()
    n = {"none": "bf16", "fp16": "bf16", "16bit": "bf16", "int4": "awq", "4bit": "awq",
         "compressed-tensors": "w4a16"}.get(n, n)
    if n not in quant_formats():
        raise ValueError(f"unknown quantization {name!r}: use one of {', '.join(quant_formats())}")
    return quant_formats()[n]
