"""TP/PP layout rules and the multi-GPU / multi-node planner."""

from __future__ import annotations

import json

import pytest

from launch.ray_cmd import check_model_layout
from serving.parallel import ParallelError, check_layout, plan_cluster, pp_partition
from serving.settings import build_vllm_args


@pytest.mark.parametrize("layers,pp", [(36, 1), (36, 5), (64, 3), (94, 4), (28, 6), (36, 36)])
def test_pp_partition_is_vllms(layers, pp):
    from vllm.distributed.utils import get_pp_indices

    ours = pp_partition(layers, pp)
    theirs = [b - a for a, b in (get_pp_indices(layers, r, pp) for r in range(pp))]
    assert ours == theirs


def test_layouts_that_cannot_run_say_why():
    with pytest.raises(ParallelError, match="does not divide 32b's 64 attention / 8 KV"):
        check_layout("32b", 3)
    with pytest.raises(ParallelError, match="deepstack feeds visual features into the first 3"):
        check_layout("32b", 1, 36)  # one layer per stage
    with pytest.raises(ParallelError, match="keep TP <= 4 inside a node"):
        check_layout("32b", 8, 1, gpus_per_node=4)
    with pytest.raises(ParallelError, match="= 16 GPUs, but 1 node"):
        check_layout("32b", 8, 2, gpus_per_node=8, nodes=1)
    assert check_layout("32b", 8, 2, gpus_per_node=8, nodes=2) == [32, 32]


def test_a_model_larger_than_a_node_gets_pipeline_stages_over_ray():
    cp = plan_cluster("235b-a22b", "a100-40g", "bf16", gpus_per_node=8, nodes=2)
    assert (cp.fits, cp.tp, cp.pp, cp.executor, cp.replicas) == (True, 8, 2, "ray", 1)
    args = build_vllm_args(cp.settings())
    for flag, value in [("--tensor-parallel-size", "8"), ("--pipeline-parallel-size", "2"),
                        ("--distributed-executor-backend", "ray"),
                        ("--mm-encoder-tp-mode", "data")]:
        assert args[args.index(flag) + 1] == value
    assert not plan_cluster("235b-a22b", "a100-40g", "bf16", gpus_per_node=8, nodes=1).fits


def test_two_small_cards_are_flagged_against_one_larger():
    cp = plan_cluster("8b", "t4", "bf16", gpus_per_node=2)
    assert (cp.tp, cp.pp) == (2, 1)
    assert any("~40 % slower" in n and "holds 8b" in n for n in cp.notes), cp.notes


def test_a_model_that_fits_one_gpu_runs_as_replicas_not_tp():
    # measured on 2x H200 (loadtests/results/h200x2-32b-tp-2026-11-21): TP=2 gave 0.71x the
    # images per GPU-hour of TP=1
    cp = plan_cluster("32b", "h200", "bf16", gpus_per_node=2)
    assert (cp.tp, cp.pp, cp.replicas, cp.executor) == (1, 1, 2, "mp")


def test_layout_checked_against_a_checkpoints_own_config(tmp_path):
    cfg = {"text_config": {"num_attention_heads": 32, "num_key_value_heads": 8,
                           "num_hidden_layers": 36},
           "vision_config": {"deepstack_visual_indexes": [8, 16, 24]}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    check_model_layout(str(tmp_path), 8, 4)
    with pytest.raises(ParallelError, match="does not divide"):
        check_model_layout(str(tmp_path), 3, 1)
    with pytest.raises(ParallelError, match="first pipeline stage gets 2 layers"):
        check_model_layout(str(tmp_path), 1, 18)
