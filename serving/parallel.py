"""Tensor x pipeline parallel for more than one GPU or node: which sizes are legal for a model,
which the planner recommends for a set of GPUs, and when splitting is slower than one card.

Rules (checked against vLLM 0.26.0 / 0.32.0 source):
- TP must divide the attention heads, and the KV heads or be a multiple of them
  (`tp_divides` in serving/planner.py);
- PP layers are split like vLLM's `get_pp_indices` (even; the remainder goes to the stages
  before the last) unless VLLM_PP_LAYER_PARTITION says otherwise;
- Qwen3-VL's deepstack adds visual features to the first len(deepstack_visual_indexes) language
  layers (3), and only the first pipeline stage has them: that stage needs at least 3 layers;
- TP stays inside a node (an all-reduce per layer needs NVLink-class bandwidth); PP goes across
  nodes (one activation transfer per stage); Ray runs the engine across nodes.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from serving.catalog import CardSpec, ModelSpec, find_card, find_model
from serving.planner import Plan, Workload, _tp_ok, make_plan, tp_divides

# cards whose multi-GPU servers usually link GPUs over PCIe only (no NVLink / NVSwitch)
PCIE_ONLY = {"t4", "a10g", "l4", "rtx3090", "l40s"}
# seen in the seed project's runs: 2x T4 (TP=2, PCIe) ~40 % slower than one RTX 3090
PCIE_TP_PENALTY = "2x T4 at TP=2 over PCIe was ~40 % slower than one RTX 3090 in our seed runs"


class ParallelError(ValueError):
    """A TP/PP/node layout that cannot work, with what to do instead."""


def pp_partition(num_layers: int, pp: int, override: str | None = None) -> list[int]:
    """Language layers per pipeline stage, as vLLM's get_pp_indices splits them."""
    if override:
        parts = [int(x) for x in override.split(",")]
        if len(parts) != pp or sum(parts) != num_layers:
            raise ParallelError(f"VLLM_PP_LAYER_PARTITION={override} must list {pp} stages "
                                f"adding up to {num_layers} layers")
        return parts
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


def check_shape(heads: int, kv_heads: int, layers: int, deepstack: int, tp: int, pp: int = 1, *,
                name: str = "the model", flags: bool = False,
                partition: str | None = None) -> list[int]:
    """Raise ParallelError when TP/PP cannot split this shape; return the layers per stage.
    `flags` names the sizes as vLLM flags (for a checkpoint's config) instead of TP=/PP=."""
    tp_s, pp_s = (f"--tensor-parallel-size {tp}", f"--pipeline-parallel-size {pp}") if flags \
        else (f"TP={tp}", f"PP={pp}")
    if tp < 1 or pp < 1:
        raise ParallelError("tensor and pipeline parallel sizes must be >= 1")
    if not tp_divides(heads, kv_heads, tp):
        ok = [n for n in (1, 2, 4, 8, 16) if tp_divides(heads, kv_heads, n)]
        raise ParallelError(f"{tp_s} does not divide {name}'s {heads} attention / {kv_heads} "
                            f"KV heads; use one of {ok}")
    if pp > layers:
        raise ParallelError(f"{pp_s} exceeds {name}'s {layers} layers")
    parts = pp_partition(layers, pp, partition)
    if parts[0] < deepstack:
        raise ParallelError(f"the first pipeline stage gets {parts[0]} layers but Qwen3-VL's "
                            f"deepstack feeds visual features into the first {deepstack}: give "
                            f"it >= {deepstack} (VLLM_PP_LAYER_PARTITION) or use fewer stages")
    return parts


def check_layout(model: str | ModelSpec, tp: int, pp: int = 1, *, gpus_per_node: int | None = None,
                 nodes: int | None = None, partition: str | None = None) -> list[int]:
    """Raise ParallelError when the layout cannot run; return the layers per stage."""
    m = model if isinstance(model, ModelSpec) else find_model(model)
    t = m.text
    parts = check_shape(t.num_attention_heads, t.num_key_value_heads, t.num_hidden_layers,
                        len(m.vision.deepstack_visual_indexes), tp, pp, name=m.key,
                        partition=partition)
    if gpus_per_node is not None:
        if tp > gpus_per_node:
            raise ParallelError(f"TP={tp} spans nodes of {gpus_per_node} GPUs: keep TP <= "
                                f"{gpus_per_node} inside a node and use PP across nodes")
        if nodes is not None and tp * pp > gpus_per_node * nodes:
            raise ParallelError(f"TP={tp} x PP={pp} = {tp * pp} GPUs, but {nodes} node(s) x "
                                f"{gpus_per_node} GPUs = {gpus_per_node * nodes}")
    return parts


class ClusterPlan(BaseModel):
    """The layout for a set of GPUs: one engine of TP x PP GPUs, `replicas` of them."""
    fits: bool
    model: str
    card: str
    quant: str
    gpus_per_node: int
    nodes: int
    tp: int
    pp: int
    replicas: int = Field(description="engines of TP x PP GPUs that the GPUs hold (data parallel)")
    layers_per_stage: list[int] = Field(default_factory=list)
    executor: str = "mp"
    plan: Plan | None = Field(None, description="memory plan per GPU of one engine")
    notes: list[str] = Field(default_factory=list)

    def settings(self, **overrides):
        """The ServeSettings of one engine (what `qvl serve` / `qvl ray head` run)."""
        if not self.fits or self.plan is None:
            raise ParallelError("; ".join(self.notes) or "does not fit")
        fields = dict(tensor_parallel_size=self.tp, pipeline_parallel_size=self.pp,
                      mm_encoder_tp_mode="data" if self.tp > 1 else None,
                      distributed_executor_backend="ray" if self.executor == "ray" else None)
        return self.plan.settings(**(fields | overrides))


def plan_cluster(model: str, card: str, quant: str | None = None, *, gpus_per_node: int = 1,
                 nodes: int = 1, workload: Workload | None = None,
                 gpu_memory_utilization: float = 0.90) -> ClusterPlan:
    """The smallest engine (TP inside a node first, then PP over nodes) that fits, and how many
    such engines the GPUs hold. Fewer GPUs per engine is faster per GPU: TP and PP are for
    models that do not fit, not for throughput."""
    m, c = find_model(model), find_card(card)
    notes: list[str] = []
    chosen: tuple[int, int, Plan] | None = None
    for pp in [p for p in range(1, nodes + 1) if nodes % p == 0]:
        for tp in (1, 2, 4, 8, 16):
            if tp > gpus_per_node or not _tp_ok(m, tp):
                continue
            # PP splits the layers: per GPU it is sized like TP x PP ways (an approximation:
            # the vision tower and embeddings sit on the first/last stage only)
            if not _tp_ok(m, tp * pp):
                continue
            p = make_plan(m, c, quant, tp=tp * pp, workload=workload,
                          gpu_memory_utilization=gpu_memory_utilization, suggest=False)
            if p.fits:
                chosen = (tp, pp, p)
                break
        if chosen:
            break
    if not chosen:
        p = make_plan(m, c, quant, tp=1, workload=workload,
                      gpu_memory_utilization=gpu_memory_utilization)
        return ClusterPlan(fits=False, model=m.key, card=c.key, quant=p.quant,
                           gpus_per_node=gpus_per_node, nodes=nodes, tp=1, pp=1, replicas=0,
                           plan=p, notes=[f"{m.key} {p.quant} does not fit even split over all "
                                          f"{nodes} node(s) x {gpus_per_node} {c.key}; on one "
                                          f"GPU: {p.reason}"])
    tp, pp, p = chosen
    parts = check_layout(m, tp, pp, gpus_per_node=gpus_per_node, nodes=nodes)
    replicas = (gpus_per_node * nodes) // (tp * pp)
    if tp > 1 and c.key in PCIE_ONLY:
        notes.append(f"TP={tp} on {c.name} runs its all-reduces over PCIe: {PCIE_TP_PENALTY}. "
                     + _one_bigger_card(m, c, p.quant, workload))
    if pp > 1:
        notes.append(f"PP={pp}: one engine spans {pp} nodes of {tp} GPUs and needs Ray (`qvl "
                     f"ray head` / `qvl ray worker`); language layers per stage {parts}")
    if replicas > 1:
        notes.append(f"{replicas} engines of {tp * pp} GPU(s) fit: run them as replicas (data "
                     "parallel) behind one Service for {:.0f}x the throughput of one".format(
                         replicas))
    return ClusterPlan(fits=True, model=m.key, card=c.key, quant=p.quant,
                       gpus_per_node=gpus_per_node, nodes=nodes, tp=tp, pp=pp, replicas=replicas,
                       layers_per_stage=parts, executor="ray" if pp > 1 else "mp",
                       plan=p, notes=notes)


def _one_bigger_card(m: ModelSpec, small: CardSpec, quant: str, workload) -> str:
    from serving.catalog import cards

    for c in sorted(cards().values(), key=lambda c: c.price_hour):
        if c.memory_gib > small.memory_gib and make_plan(m, c, quant, tp=1, workload=workload,
                                                         suggest=False).fits:
            return (f"one {c.name} (${c.price_hour:.2f}/h) holds {m.key} {quant} alone and is "
                    "likely faster")
    return "no single card in the catalog holds it alone"

