"""Build the Kubernetes MPIJob (mpi-operator v2beta1) that runs one Horovod training.

Pure: returns a plain dict for `kubectl apply`, the kubernetes client or a KFP step; it talks to
no cluster. The launcher pod runs `horovodrun` over the operator's ssh to the worker pods; every
rank runs `components.train.worker`, the same code `gallerytag train` runs on one machine.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from components.train.config import TrainConfig

API_VERSION = "kubeflow.org/v2beta1"
# The operator mounts its generated key pair (id_rsa, authorized_keys) here. The default,
# /root/.ssh, would force every pod to run as root; uid 1000 is the image's `mpiuser`.
SSH_AUTH_MOUNT_PATH = "/home/mpiuser/.ssh"
RUN_AS_USER = 1000
# Non-root sshd cannot bind port 22. The image's sshd config (written in the Dockerfiles)
# listens here, keeps its pid file in /tmp and uses the operator's key as host key.
SSH_PORT = 2222
SSHD_CONFIG = "/etc/gallerytag/sshd_config"
HOSTFILE = "/etc/mpi/hostfile"  # written by the operator: `<worker>.<job>.<ns>.svc slots=N`
GPU_RESOURCE = "nvidia.com/gpu"
# An MPIJob name becomes a Service and pod names such as `<name>-worker-12` (DNS-1035 labels).
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
NAME_MAX = 50


@dataclass(frozen=True)
class MPIJobConfig:
    """What to run (image, the training config) and on how much hardware."""

    name: str
    image: str
    train: TrainConfig  # data and checkpoint_dir on storage every pod reaches (gs://)
    tracking_uri: str | None = None  # MLflow; default: the in-cluster service
    namespace: str = "gallerytag"
    workers: int = 2  # worker pods
    gpus_per_worker: int = 0  # 0 = CPU training; otherwise one Horovod rank per GPU
    cpu_request: str = "2"  # per worker pod
    memory_request: str = "8Gi"  # per worker pod; also its memory limit
    node_selector: dict[str, str] = field(default_factory=dict)  # worker pods only
    tolerations: list[dict[str, Any]] = field(default_factory=list)  # worker pods only
    service_account: str = "gallerytag-train"
    env: dict[str, str] = field(default_factory=dict)  # added to (and overriding) the defaults
    backoff_limit: int = 2  # launcher retries; a retry resumes from the last checkpoint
    launcher_cpu_request: str = "500m"
    launcher_memory_request: str = "1Gi"


def slots_per_worker(config: MPIJobConfig) -> int:
    """Horovod ranks per worker pod: one per GPU, or one on a CPU-only pod."""
    return max(1, config.gpus_per_worker)


def world_size(config: MPIJobConfig) -> int:
    """Total Horovod ranks (`horovodrun -np`)."""
    return config.workers * slots_per_worker(config)


def train_config(config: MPIJobConfig) -> TrainConfig:
    """The training config every rank runs: its workers are the MPIJob's ranks."""
    ranks = world_size(config)
    train = config.train
    if train.workers not in (1, ranks):
        raise ValueError(
            f"the training config says workers={train.workers} but the MPIJob runs {ranks} "
            f"ranks ({config.workers} pods x {slots_per_worker(config)}); leave workers at 1 "
            "and set MPIJobConfig.workers / gpus_per_worker instead"
        )
    if not train.data:
        raise ValueError("the training config has no data (the ingested dataset, gs://...)")
    if not train.checkpoint_dir:
        # The local default lives on one pod's disk, but every rank reads the checkpoint.
        raise ValueError(
            "the training config needs checkpoint_dir on storage all worker pods share "
            "(e.g. gs://bucket/checkpoints/run-name), so a retried job resumes"
        )
    return dataclasses.replace(train, workers=ranks)


def config_url(train: TrainConfig) -> str:
    """The training config as a data: URL, so every rank reads it with no shared file."""
    encoded = base64.b64encode(train.to_json().encode("utf-8")).decode("ascii")
    return f"data:application/json;base64,{encoded}"


def launcher_command(config: MPIJobConfig, train: TrainConfig) -> list[str]:
    """`horovodrun` over the operator's hostfile, running the training worker on every rank."""
    return [
        "horovodrun",
        "-np",
        str(world_size(config)),
        "--hostfile",
        HOSTFILE,
        # Horovod is built with Gloo and without MPI (third_party/horovod/build.sh), so
        # horovodrun starts the ranks itself over ssh instead of calling mpirun.
        "--gloo",
        "--ssh-port",
        str(SSH_PORT),
        # Not `gallerytag train`: that command runs its own horovodrun on localhost.
        "python",
        "-m",
        "components.train.worker",
        "--config",
        config_url(train),
    ]


def pod_security_context() -> dict[str, Any]:
    """Pod-level settings of the "restricted" Pod Security Standard, as uid 1000."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level settings of the "restricted" Pod Security Standard."""
    # The operator mounts the ssh Secret at SSH_AUTH_MOUNT_PATH (root-owned, 0644, so ssh
    # accepts it without a chmod); sshd writes only its pid file, to /tmp. With those two,
    # the root filesystem can stay read-only.
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def environment(config: MPIJobConfig, tracking_uri: str | None) -> list[dict[str, str]]:
    """Launcher env: defaults for a read-only pod and the in-cluster MLflow, then config.env."""
    values = {
        "GALLERYTAG_HOME": "/tmp/gallerytag",
        "MLFLOW_TRACKING_URI": tracking_uri or f"http://mlflow.{config.namespace}.svc:5000",
        "PYTHONUNBUFFERED": "1",
    }
    values.update(config.env)
    return [{"name": name, "value": value} for name, value in values.items()]


def _tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    return {"name": "tmp", "emptyDir": {}}, {"name": "tmp", "mountPath": "/tmp"}


def launcher_template(
    config: MPIJobConfig, train: TrainConfig, tracking_uri: str | None
) -> dict[str, Any]:
    """The launcher pod: small, no GPU, runs horovodrun and follows the ranks' output."""
    volume, mount = _tmp_volume()
    container = {
        "name": "launcher",
        "image": config.image,
        "command": launcher_command(config, train),
        # horovodrun hands its own environment to every rank over ssh; sshd on the workers
        # would not pass the worker containers' env to those sessions.
        "env": environment(config, tracking_uri),
        "resources": {
            "requests": {
                "cpu": config.launcher_cpu_request,
                "memory": config.launcher_memory_request,
            },
            "limits": {"memory": config.launcher_memory_request},
        },
        "securityContext": container_security_context(),
        "volumeMounts": [mount],
    }
    return {
        "metadata": {"labels": labels(config, "launcher")},
        "spec": {
            "serviceAccountName": config.service_account,
            # mpi-operator v2 launchers need no Kubernetes API access (no kubectl exec).
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "containers": [container],
            "volumes": [volume],
        },
    }


def worker_template(config: MPIJobConfig) -> dict[str, Any]:
    """A worker pod: sshd in the foreground; horovodrun starts the ranks through it."""
    volume, mount = _tmp_volume()
    volumes, mounts = [volume], [mount]
    limits: dict[str, Any] = {"memory": config.memory_request}
    if config.gpus_per_worker > 0:
        limits[GPU_RESOURCE] = config.gpus_per_worker
        # NCCL between the GPUs of one pod goes through /dev/shm; the runtime's 64 MiB is
        # too small.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    container = {
        "name": "worker",
        "image": config.image,
        "command": ["/usr/sbin/sshd", "-De", "-f", SSHD_CONFIG],
        "ports": [{"name": "ssh", "containerPort": SSH_PORT}],
        # With launcherCreationPolicy WaitForWorkersReady, horovodrun starts only when every
        # sshd accepts connections.
        "readinessProbe": {"tcpSocket": {"port": SSH_PORT}, "periodSeconds": 2},
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": limits,
        },
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        "serviceAccountName": config.service_account,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = [dict(toleration) for toleration in config.tolerations]
    return {"metadata": {"labels": labels(config, "worker")}, "spec": spec}


def labels(config: MPIJobConfig, role: str) -> dict[str, str]:
    """Recommended app labels; the operator adds its own training.kubeflow.org/* labels."""
    return {
        "app.kubernetes.io/name": "gallerytag",
        "app.kubernetes.io/component": f"train-{role}",
        "app.kubernetes.io/instance": config.name,
    }


def check(config: MPIJobConfig) -> None:
    """Reject a config the operator or the cluster would reject later, naming the fix."""
    if not NAME_PATTERN.match(config.name) or len(config.name) > NAME_MAX:
        raise ValueError(
            f"MPIJob name {config.name!r} must be lowercase letters, digits and '-', start "
            f"with a letter, end with a letter or digit, at most {NAME_MAX} characters"
        )
    if config.workers < 1:
        raise ValueError(f"workers must be at least 1, not {config.workers}")
    if config.gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be 0 (CPU) or more, not {config.gpus_per_worker}")
    if config.backoff_limit < 0:
        raise ValueError(f"backoff_limit must be 0 or more, not {config.backoff_limit}")
    if not config.image:
        raise ValueError("image is empty; build Dockerfile or Dockerfile.gpu and pass its tag")


def build_mpijob(config: MPIJobConfig) -> dict[str, Any]:
    """The MPIJob manifest for one training run, ready for `kubectl apply`."""
    check(config)
    train = train_config(config)
    return {
        "apiVersion": API_VERSION,
        "kind": "MPIJob",
        "metadata": {
            "name": config.name,
            "namespace": config.namespace,
            "labels": labels(config, "job"),
        },
        "spec": {
            "slotsPerWorker": slots_per_worker(config),
            "mpiImplementation": "OpenMPI",  # hostfile lines as `host slots=N`, horovodrun's format
            "sshAuthMountPath": SSH_AUTH_MOUNT_PATH,
            "launcherCreationPolicy": "WaitForWorkersReady",
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": config.backoff_limit},
            "mpiReplicaSpecs": {
                "Launcher": {
                    "replicas": 1,
                    "template": launcher_template(config, train, config.tracking_uri),
                },
                "Worker": {"replicas": config.workers, "template": worker_template(config)},
            },
        },
    }
