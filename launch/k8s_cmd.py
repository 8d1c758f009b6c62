"""`qvl k8s render|check`: the Kubernetes overlays, rendered from the same profiles as `qvl serve`.

Each card overlay (k8s/overlays/<card>/) is a kustomization over k8s/base plus one generated
patch, `vllm.yaml`: the vLLM arguments (serving.settings.build_vllm_args of the profile's
settings — the same function `qvl serve --profile` uses), the GPU count (TP), the node
selection by NVIDIA's `nvidia.com/gpu.product` label from the card catalog, the toleration for
the usual `nvidia.com/gpu` taint, resources, and the drain timing. `check` re-renders in memory
and fails when a committed overlay differs (`make test` runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "k8s" / "overlays"
# overlay directory -> the profile it is rendered from
CARD_OVERLAYS = {"t4": "t4-8b-awq", "a10g": "a10g-8b-awq", "rtx3090": "rtx3090-8b-awq",
                 "l4": "l4-8b-fp8", "a100": "a100-32b-awq", "h100": "h100-32b-fp8-tp2",
                 "h200": "h200-8b-fp8"}
PRESTOP_S = 10
PORT = 8000
# the multi-node example: a model larger than one node, TP inside each node x PP across nodes
MULTINODE = {"dir": "multinode-235b-a100", "model": "235b-a22b", "card": "a100-40g",
             "quant": "bf16", "gpus_per_node": 8, "nodes": 2}


def container_args(profile: str) -> tuple[str, list[str], object]:
    """(checkpoint repo, `vllm serve` arguments, settings) for the profile, as served in a pod."""
    from serving.profiles import load_profile
    from serving.settings import build_vllm_args

    prof = load_profile(profile)
    if prof.is_cpu:
        raise ValueError(f"profile {profile} runs on CPU: there is no GPU overlay for it")
    repo = prof.settings().model
    # guard=False: the upstream image has no qvl (its guard needs the project image)
    s = prof.settings(model=f"/models/{repo}", served_model_name=repo, host="0.0.0.0",
                      port=PORT, guard=False)
    return repo, build_vllm_args(s), s


def gpu_placement(card) -> dict:
    """Pod spec fields that put a pod on the card's nodes: the GPU product label that NVIDIA's
    feature discovery sets, and the usual nvidia.com/gpu taint tolerated."""
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{
                    "key": "nvidia.com/gpu.product", "operator": "In",
                    "values": card.k8s_gpu_products}]}]}}},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"}]}


def render_patch(profile: str) -> str:
    from serving.catalog import find_card
    from serving.profiles import load_profile
    from serving.settings import runner_env

    prof = load_profile(profile)
    card = find_card(prof.card)
    repo, args, s = container_args(profile)
    # merged by name into the base's env (strategic merge): what vLLM reads only from there
    env = [{"name": k, "value": v} for k, v in runner_env(s).items()]
    gpus = s.tensor_parallel_size * s.pipeline_parallel_size
    frontends = s.api_server_count or 1
    memory = f"{16 + 4 * (frontends + 1)}Gi"  # engine + 4 GiB mm cache per process
    patch = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "qvl-vllm"},
        "spec": {"template": {"spec": {
            "terminationGracePeriodSeconds": PRESTOP_S + s.shutdown_timeout + 15,
            **gpu_placement(card),
            "initContainers": [{"name": "download", "env": [{"name": "MODEL_ID",
                                                             "value": repo}]}],
            "containers": [{
                "name": "vllm", "args": args, **({"env": env} if env else {}),
                "resources": {
                    "requests": {"nvidia.com/gpu": str(gpus), "cpu": str(2 + 2 * frontends),
                                 "memory": memory},
                    "limits": {"nvidia.com/gpu": str(gpus), "memory": memory}}}],
            "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory",
                                                     "sizeLimit": "16Gi" if gpus > 1
                                                     else "4Gi"}}],
        }}}}
    head = (f"# Rendered by `qvl k8s render --profile {profile}` from serving/profiles/"
            f"{profile}.yaml ({prof.model} {prof.quant} on {card.name}, TP={s.tensor_parallel_size})."
            "\n# Do not edit: change the profile and re-render; `make test` fails on drift.\n")
    return head + yaml.safe_dump(patch, sort_keys=False, width=100)


def render_kustomization(card_dir: str, profile: str) -> str:
    return (f"# {card_dir}: k8s/base with the `{profile}` profile "
            f"(`kubectl apply -k k8s/overlays/{card_dir}`)\n"
            "# Rendered by `qvl k8s render`; do not edit.\n" + yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": ["../../base"],
                "labels": [{"pairs": {"qvl.io/profile": profile}, "includeSelectors": False,
                            "includeTemplates": True}],
                "patches": [{"path": "vllm.yaml"}]}, sort_keys=False))


def render_overlay(card_dir: str, profile: str) -> dict[str, str]:
    return {"kustomization.yaml": render_kustomization(card_dir, profile),
            "vllm.yaml": render_patch(profile)}


LEADER_SCRIPT = """set -eu
# what `qvl ray head` does, with the upstream image: head, wait for every GPU, then vLLM
ray start --head --port=6379 --num-gpus={gpn} --disable-usage-stats --include-dashboard=false \\
  --node-ip-address="$VLLM_HOST_IP"
python3 - <<'PY'
import ray, time
ray.init(address="auto", logging_level="ERROR")
t0 = time.time()
while sum(n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]) < {gpus}:
    if time.time() - t0 > 900:
        raise SystemExit("timed out waiting for {gpus} GPUs: are all worker pods scheduled?")
    time.sleep(2)
PY
exec vllm serve {args}
"""
WORKER_SCRIPT = """set -eu
exec ray start --address="$LWS_LEADER_ADDRESS:6379" --num-gpus={gpn} --block \\
  --disable-usage-stats --node-ip-address="$VLLM_HOST_IP"
"""


def render_multinode() -> dict[str, str]:
    """A LeaderWorkerSet: one group of `nodes` pods (Ray head + workers) per replica."""
    import shlex

    from serving.catalog import find_card
    from serving.parallel import plan_cluster
    from serving.settings import build_vllm_args

    m = MULTINODE
    cp = plan_cluster(m["model"], m["card"], m["quant"], gpus_per_node=m["gpus_per_node"],
                      nodes=m["nodes"])
    repo = cp.settings().model
    s = cp.settings(model=f"/models/{repo}", served_model_name=repo, host="0.0.0.0", port=PORT,
                    guard=False)
    gpn, card = m["gpus_per_node"], find_card(m["card"])
    name = "qvl-vllm-multinode"
    env = [{"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "RAY_AUTH_MODE", "value": "token"},
           {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
               "name": "qvl-secrets", "key": "ray-token"}}},
           {"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "HF_HOME", "value": "/models/.hf"},
           {"name": "VLLM_CACHE_ROOT", "value": "/models/.cache/vllm"},
           {"name": "NCCL_NVLS_ENABLE", "value": "0"}]
    mounts = [{"name": "models", "mountPath": "/models"}, {"name": "shm", "mountPath": "/dev/shm"}]
    res = {"requests": {"nvidia.com/gpu": str(gpn), "cpu": "16", "memory": "200Gi"},
           "limits": {"nvidia.com/gpu": str(gpn), "memory": "200Gi"}}
    pod = {
        "terminationGracePeriodSeconds": PRESTOP_S + s.shutdown_timeout + 15,
        **gpu_placement(card),
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "qvl-model-cache-rwx"}},
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}]}
    image = "vllm/vllm-openai:v0.32.0"
    leader = {**pod, "containers": [{
        "name": "vllm", "image": image, "command": ["bash", "-c"],
        "args": [LEADER_SCRIPT.format(gpn=gpn, gpus=cp.tp * cp.pp,
                                      args=shlex.join(build_vllm_args(s)))],
        "env": [{"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": "qvl-secrets", "key": "api-key"}}}] + env,
        "ports": [{"name": "http", "containerPort": PORT}], "resources": res,
        "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10,
                         "failureThreshold": 360},
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 6},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}},
        "volumeMounts": mounts}]}
    worker = {**pod, "containers": [{
        "name": "ray-worker", "image": image, "command": ["bash", "-c"],
        "args": [WORKER_SCRIPT.format(gpn=gpn)], "env": env, "resources": res,
        "livenessProbe": {"exec": {"command": ["ray", "health-check"]}, "periodSeconds": 30,
                          "failureThreshold": 4},
        "volumeMounts": mounts}]}
    labels = {"app.kubernetes.io/name": name}
    lws = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
           "metadata": {"name": name, "labels": labels},
           "spec": {"replicas": 1, "leaderWorkerTemplate": {
               "size": m["nodes"], "restartPolicy": "RecreateGroupOnPodRestart",
               "leaderTemplate": {"metadata": {"labels": {**labels, "role": "leader"}},
                                  "spec": leader},
               "workerTemplate": {"metadata": {"labels": {**labels, "role": "worker"}},
                                  "spec": worker}}}}
    head = (f"# Rendered by `qvl k8s render --all` from the planner: {m['model']} {m['quant']} "
            f"on {m['nodes']} nodes x {gpn} {card.name}\n# = TP={cp.tp} x PP={cp.pp}, layers per "
            f"stage {cp.layers_per_stage}, Ray executor. Do not edit; `make test` fails on drift.\n")
    kust = ("# A model larger than one node: LeaderWorkerSet groups of Ray head + workers.\n"
            "# Rendered by `qvl k8s render --all`; do not edit.\n" + yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "namespace": "qvl", "labels": [{"pairs": {"app.kubernetes.io/part-of": "qvl"}}],
                "resources": ["namespace.yaml", "pvc-rwx.yaml", "service.yaml",
                              "networkpolicy.yaml", "leaderworkerset.yaml"]}, sort_keys=False))
    return {"kustomization.yaml": kust,
            "leaderworkerset.yaml": head + yaml.safe_dump(lws, sort_keys=False, width=100)}


def all_overlays() -> dict[str, dict[str, str]]:
    out = {d: render_overlay(d, p) for d, p in CARD_OVERLAYS.items()}
    out[MULTINODE["dir"]] = render_multinode()
    return out


def drift(root: Path = OVERLAYS) -> list[str]:
    """Overlay files that differ from what their profile renders to (or are missing)."""
    out = []
    for card_dir, files in all_overlays().items():
        for name, text in files.items():
            path = root / card_dir / name
            if not path.is_file() or path.read_text() != text:
                out.append(str(path.relative_to(root.parent.parent)))
    return out


def run_render(a: argparse.Namespace) -> int:
    if a.all:
        for card_dir, files in all_overlays().items():
            (OVERLAYS / card_dir).mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (OVERLAYS / card_dir / name).write_text(text)
            print(f"wrote {OVERLAYS / card_dir}/")
        return 0
    if not a.profile:
        print("qvl k8s render: error: pass --profile NAME or --all", file=sys.stderr)
        return 2
    card_dir = a.card or next((c for c, p in CARD_OVERLAYS.items() if p == a.profile),
                              a.profile)
    try:
        files = render_overlay(card_dir, a.profile)
    except (ValueError, KeyError) as e:
        print(f"qvl k8s render: error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else OVERLAYS / card_dir
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    print(f"wrote {out}/ (profile {a.profile})")
    return 0


def run_check(_a: argparse.Namespace) -> int:
    bad = drift()
    if bad:
        print("k8s overlays out of date with their profiles (run `qvl k8s render --all`):\n  "
              + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"{len(CARD_OVERLAYS) + 1} overlays match their profiles")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("k8s", help="render the Kubernetes overlays from the profiles")
    ks = p.add_subparsers(dest="k8s_cmd", required=True)
    r = ks.add_parser("render", help="write k8s/overlays/<card>/ from a profile")
    r.add_argument("--profile", help="profile name (see `qvl profiles`)")
    r.add_argument("--card", help="overlay directory name (default: the card's)")
    r.add_argument("--all", action="store_true", help="every card overlay")
    r.add_argument("--out", help="write here instead of k8s/overlays/<card>")
    r.set_defaults(func=run_render)
    c = ks.add_parser("check", help="fail when a committed overlay drifted from its profile")
    c.set_defaults(func=run_check)
