"""Run one training as an MPIJob on the cluster (the KFP training step's `mpijob` launcher):
create it, follow the launcher's log, wait for the outcome, read the result rank 0 wrote.

Adapter around the pure `mpijob.build_mpijob`; it needs a cluster (in-cluster service account
or a kubeconfig) with the mpi-operator installed, so it is exercised on a cluster, not in CI.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

from components.common import storage
from components.train.config import TrainConfig
from components.train.mpijob import MPIJobConfig, build_mpijob

GROUP, VERSION, PLURAL = "kubeflow.org", "v2beta1", "mpijobs"
ROLE_LABEL = "training.kubeflow.org/job-role"
JOB_LABEL = "training.kubeflow.org/job-name"


def with_result_file(job: dict[str, Any], result_uri: str) -> dict[str, Any]:
    """Ask rank 0 to write its run id and model version to `result_uri`."""
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    launcher["command"] = [*launcher["command"], "--result", result_uri]
    return job


def job_outcome(status: dict[str, Any]) -> str | None:
    """'Succeeded' or 'Failed' once the MPIJob's conditions say so, else None."""
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return condition["type"]
    return None


def _load_cluster_config() -> None:
    from kubernetes import config as kube_config

    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()


def _stream_launcher_log(core, namespace: str, name: str) -> None:
    """Print the launcher's log as it runs (horovodrun relays every rank's output)."""
    selector = f"{JOB_LABEL}={name},{ROLE_LABEL}=launcher"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    running = [p for p in pods if p.status.phase in ("Running", "Succeeded", "Failed")]
    if not running:
        return
    stream = core.read_namespaced_pod_log(
        running[0].metadata.name, namespace, follow=True, _preload_content=False
    )
    for line in stream:
        print(line.decode(errors="replace"), end="", flush=True)


def run_mpijob(
    config: TrainConfig,
    tracking_uri: str,
    image: str,
    workers: int,
    gpus_per_worker: int,
    checkpoint_root: str,
    options: dict[str, Any] | None = None,
    namespace: str = "gallerytag",
    timeout_s: float = 48 * 3600,
) -> str:
    """Create the MPIJob, follow it to the end and return models:/NAME/VERSION. `options`
    are further MPIJobConfig fields (node_selector, tolerations, cpu_request, ...)."""
    from kubernetes import client

    if not checkpoint_root.startswith("gs://"):
        raise ValueError("an MPIJob needs a gs:// checkpoint_root that every pod can reach")
    name = f"gallerytag-train-{uuid.uuid4().hex[:8]}"
    run_dir = storage.join(checkpoint_root, name)
    result_uri = storage.join(run_dir, "result.json")
    job = build_mpijob(
        MPIJobConfig(
            name=name,
            image=image,
            namespace=namespace,
            train=dataclasses.replace(config, checkpoint_dir=run_dir),
            tracking_uri=tracking_uri,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            **(options or {}),
        )
    )
    _load_cluster_config()
    custom, core = client.CustomObjectsApi(), client.CoreV1Api()
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, with_result_file(job, result_uri)
    )
    print(f"created MPIJob {namespace}/{name}", flush=True)
    deadline = time.monotonic() + timeout_s
    streamed = False
    while time.monotonic() < deadline:
        found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        outcome = job_outcome(found.get("status") or {})
        if not streamed:
            _stream_launcher_log(core, namespace, name)  # returns when the launcher ends
            streamed = outcome is not None or bool(
                core.list_namespaced_pod(
                    namespace, label_selector=f"{JOB_LABEL}={name},{ROLE_LABEL}=launcher"
                ).items
            )
        if outcome == "Failed":
            raise RuntimeError(f"MPIJob {name} failed; see `kubectl -n {namespace} logs` above")
        if outcome == "Succeeded":
            result = json.loads(storage.read_text(result_uri))
            return f"models:/{result['registered_model']}/{result['version']}"
        time.sleep(10)
    raise TimeoutError(f"MPIJob {name} did not finish within {timeout_s / 3600:.0f} h")
