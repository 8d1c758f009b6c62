"""Named launch profiles: small YAML cards (model, quant, card, TP, min VRAM, verified-on).

A GPU profile is planned by the planner, so its vLLM arguments are computed, not copied; its
`serve:` block may override single settings. The CPU profile (`card: cpu`) is given directly.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving import memory
from serving.planner import Plan, make_plan
from serving.settings import ServeSettings

PROFILES_DIR = Path(__file__).parent / "profiles"


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    model: str
    quant: str = "bf16"
    card: str
    tp: int = Field(1, ge=1)
    min_vram_gib: float | None = None
    verified_on: str = "not yet"
    max_model_len: int | None = None
    serve: dict = Field(default_factory=dict)

    @property
    def is_cpu(self) -> bool:
        return self.card == "cpu"

    def plan(self) -> Plan | None:
        if self.is_cpu:
            return None
        return make_plan(self.model, self.card, self.quant, tp=self.tp,
                         max_model_len=self.max_model_len)

    def settings(self, **overrides) -> ServeSettings:
        """The ServeSettings `qvl serve --profile` runs; `overrides` win (e.g. a local model dir)."""
        fields = {**self.serve, **{k: v for k, v in overrides.items() if v is not None}}
        if self.is_cpu:
            return ServeSettings(**{"model": self.model, **fields})
        plan = self.plan()
        if not plan.fits:
            raise ValueError(f"profile {self.name}: {plan.model} {plan.quant} does not fit "
                             f"{plan.card} at TP={plan.tensor_parallel_size}: {plan.reason}")
        return plan.settings(**fields)


def min_vram_gib(plan: Plan) -> float:
    """Smallest card (GiB, at the plan's memory utilization) that holds weights, activations,
    runtime and the KV cache of one request of the planned workload."""
    need = (plan.weights_gib + plan.activation_gib + memory.RUNTIME_RESERVE_GIB
            + plan.seq_tokens * plan.kv_bytes_per_token / memory.GiB)
    return math.ceil(need / plan.gpu_memory_utilization * 10) / 10


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ValueError(f"unknown profile {name_or_path!r}: choose one of "
                         f"{', '.join(profile_names())} or pass a YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return Profile(**data)
    except (yaml.YAMLError, ValidationError, TypeError) as e:
        raise ValueError(f"profile {path} is invalid: {e}") from e
