"""The Kubernetes manifests: every kustomization renders (kubectl's built-in kustomize), every
core object validates against the Kubernetes API schema (kubernetes-validate), the custom
resources against the fields we rely on, the policies hold, and no overlay drifts from its
profile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from launch.k8s_cmd import CARD_OVERLAYS, MULTINODE, container_args, drift
from serving.profiles import load_profile
from serving.settings import runner_env

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
K8S_VERSION = "1.32.0"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))

# The custom resources' fields we rely on (no network here to vendor the CRDs' own schemas).
CRD_SCHEMAS = {
    "ScaledObject": {"required": ["spec"], "properties": {"spec": {
        "required": ["scaleTargetRef", "triggers"], "properties": {
            "scaleTargetRef": {"required": ["name"]},
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "triggers": {"type": "array", "minItems": 1, "items": {
                "required": ["type", "metadata"], "properties": {
                    "metadata": {"required": ["serverAddress", "query", "threshold"]}}}}}}}},
    "PodMonitor": {"required": ["spec"], "properties": {"spec": {
        "required": ["selector", "podMetricsEndpoints"], "properties": {
            "podMetricsEndpoints": {"type": "array", "minItems": 1,
                                    "items": {"required": ["port", "path"]}}}}}},
    "LeaderWorkerSet": {"required": ["spec"], "properties": {"spec": {
        "required": ["leaderWorkerTemplate"], "properties": {"leaderWorkerTemplate": {
            "required": ["size", "leaderTemplate", "workerTemplate"],
            "properties": {"size": {"type": "integer", "minimum": 2}}}}}}},
}


def render(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `make test` installs it (make k8s-tools)"
    r = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"{path}: {r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {str(p.relative_to(K8S)): render(p) for p in KUSTOMIZATIONS
            if yaml.safe_load((p / "kustomization.yaml").read_text())["kind"] == "Kustomization"}


def pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "Job"):
        return [spec["template"]["spec"]]
    if doc["kind"] == "LeaderWorkerSet":
        t = spec["leaderWorkerTemplate"]
        return [t["leaderTemplate"]["spec"], t["workerTemplate"]["spec"]]
    return []


def test_every_overlay_renders_and_validates(rendered):
    assert {"overlays/t4", "overlays/a10g", "overlays/rtx3090", "overlays/l4", "overlays/a100",
            "overlays/h100", "overlays/h200", f"overlays/{MULTINODE['dir']}",
            "overlays/l4-autoscaled", "base", "loadtest"} <= set(rendered)
    kinds = set()
    for name, docs in rendered.items():
        for doc in docs:
            kinds.add(doc["kind"])
            if doc["kind"] in CRD_SCHEMAS:
                jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy",
            "PersistentVolumeClaim", "Job", "ScaledObject", "PodMonitor", "ConfigMap",
            "LeaderWorkerSet"} <= kinds


def test_a_broken_manifest_is_caught():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "two", "selector": {}, "template": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_gpu_containers_have_limits_probes_drain_and_requests(rendered):
    gpu_containers = 0
    for name, docs in rendered.items():
        for doc in docs:
            for spec in pod_specs(doc):
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    req = c.get("resources", {}).get("requests", {})
                    lim = c.get("resources", {}).get("limits", {})
                    assert "cpu" in req and "memory" in req, f"{name} {c['name']}: requests"
                    assert "memory" in lim, f"{name} {c['name']}: memory limit"
                    if "nvidia.com/gpu" not in req:
                        continue
                    gpu_containers += 1
                    assert lim.get("nvidia.com/gpu") == req["nvidia.com/gpu"], name
                    assert "livenessProbe" in c, f"{name} {c['name']}: liveness"
                    if name.startswith("overlays/"):  # the base names no card
                        tol = spec.get("tolerations", [])
                        assert any(t["key"] == "nvidia.com/gpu" for t in tol), name
                        terms = spec["affinity"]["nodeAffinity"][
                            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                        expr = terms[0]["matchExpressions"][0]
                        assert expr["key"] == "nvidia.com/gpu.product" and expr["values"], name
                    if c["name"] == "vllm":  # the API server: startup, readiness, drain
                        assert {"startupProbe", "readinessProbe"} <= set(c), name
                        if name == "base":  # no arguments until an overlay adds them
                            continue
                        args = c.get("args", [])
                        text = " ".join(args)
                        m = re.search(r"--shutdown-timeout'? '?(\d+)", text)
                        timeout = int(m.group(1)) if m else int(
                            args[args.index("--shutdown-timeout") + 1])
                        pre = c["lifecycle"]["preStop"]["exec"]["command"]
                        assert spec["terminationGracePeriodSeconds"] > timeout + int(pre[-1]), name
    assert gpu_containers >= 9


def test_no_latest_or_untagged_images(rendered):
    for name, docs in rendered.items():
        for doc in docs:
            for spec in pod_specs(doc):
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    image = c["image"]
                    assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
                    assert not image.endswith(":latest"), f"{name}: {image}"


def test_pods_run_as_non_root_and_keep_the_api_key_off_the_command_line(rendered):
    for name, docs in rendered.items():
        for doc in docs:
            if doc["kind"] not in ("Deployment", "Job"):
                continue
            spec = pod_specs(doc)[0]
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            for c in spec["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
                assert "--api-key" not in c.get("args", []), name


def test_overlays_run_exactly_what_qvl_serve_runs(rendered):
    for card_dir, profile in CARD_OVERLAYS.items():
        deploy = next(d for d in rendered[f"overlays/{card_dir}"] if d["kind"] == "Deployment")
        c = deploy["spec"]["template"]["spec"]["containers"][0]
        repo, args, s = container_args(profile)
        assert c["command"] == ["vllm", "serve"] and c["args"] == args
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert all(env[k] == v for k, v in runner_env(s).items()), profile
        assert env["HF_HUB_OFFLINE"] == "1"  # the base's env is kept beside the patch's
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(load_profile(profile).tp)
        init = deploy["spec"]["template"]["spec"]["initContainers"][0]
        assert {"name": "MODEL_ID", "value": repo} in init["env"]


def test_committed_overlays_match_their_profiles():
    assert drift() == []


def test_drift_is_detected(tmp_path):
    shutil.copytree(K8S / "overlays", tmp_path / "k8s" / "overlays")
    patch = tmp_path / "k8s" / "overlays" / "t4" / "vllm.yaml"
    patch.write_text(patch.read_text().replace("--max-num-seqs", "--max-num-seqs-edited"))
    assert drift(tmp_path / "k8s" / "overlays") == ["k8s/overlays/t4/vllm.yaml"]


def test_dashboard_queries_only_metrics_vllm_exports():
    import vllm

    src = Path(vllm.__file__).parent / "v1" / "metrics"
    exported = set()
    for f in src.rglob("*.py"):
        exported |= set(re.findall(r'"(vllm:[a-z_]+)"', f.read_text()))
    dash = json.loads((K8S / "components" / "monitoring" / "qvl-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    titles = {p["title"] for p in dash["panels"]}
    assert {"Images per second", "Multimodal cache hit rate", "Image tokens share (estimated)",
            "TTFT and prompt size"} <= titles
    used = {re.sub(r"_(total|bucket|sum|count)$", "", m)
            for e in exprs for m in re.findall(r"vllm:[a-z_]+", e)}
    assert used and used <= exported, used - exported
