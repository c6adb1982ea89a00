# syntax=docker/dockerfile:1.7
# gallerytag, CPU image: the `gallerytag` command, and an MPIJob launcher/worker (sshd) for
# Horovod on Kubernetes (k8s/README.md). Build from the repository root with `make images`
# (docker, or podman/buildah without a daemon: docs/operations.md), or by hand:
#   docker build -t gallerytag:cpu .
# GPU image: Dockerfile.gpu.

# The base: the public Python image by default. Where it cannot be pulled,
# k8s/images/build-local.sh makes a Debian bookworm base with the same layout (`python` is
# 3.11 and has venv) and passes it here; every step below is the same on both.
ARG BASE=python:3.11-slim-bookworm

# ---- builder: the same steps as `make setup` (the pinned stack, Horovod), into /opt/venv ----
FROM ${BASE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# GALLERYTAG_CACHE holds the Horovod wheel (built once, keyed by Horovod, TF, Python and patch)
# and pip's download cache. With docker it is the BuildKit cache mount at /cache; podman
# builds mount the host's ~/.cache/gallerytag and point this at it (build-local.sh).
ARG GALLERYTAG_CACHE=/cache/gallerytag
# A CA bundle for pip where registries sit behind a TLS-inspecting proxy (build-local.sh
# mounts the host's); empty: the system's.
ARG HOST_CA=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CACHE_DIR=${GALLERYTAG_CACHE}/pip
WORKDIR /src
COPY requirements.txt constraints.txt ./
# The image needs the runtime pins only: everything above requirements.txt's
# "# test and tooling" block (pytest, ruff, kubectl, hadolint stay out). The wheels go
# through a wheelhouse in the cache first (pip's own HTTP cache keeps nothing behind some
# proxies), so a rebuild downloads only what is new and builds no sdist twice.
RUN --mount=type=cache,target=/cache \
    if [ -n "$HOST_CA" ]; then export PIP_CERT=$HOST_CA; fi \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install "pip==25.3" \
    && sed '/^# test and tooling/,$d' requirements.txt > /tmp/requirements-runtime.txt \
    && wheels=$GALLERYTAG_CACHE/wheelhouse && mkdir -p "$wheels" \
    && /opt/venv/bin/pip wheel -q --find-links "$wheels" -w "$wheels" \
        -r /tmp/requirements-runtime.txt -c constraints.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links "$wheels" \
        -r /tmp/requirements-runtime.txt -c constraints.txt
COPY third_party/horovod third_party/horovod
# build.sh takes the wheel from the cache, or compiles it there once (installing cmake, g++,
# make, patch and the Python headers first, which a cached wheel does not need).
RUN --mount=type=cache,target=/cache \
    if [ -n "$HOST_CA" ]; then export PIP_CERT=$HOST_CA; fi \
    && GALLERYTAG_CACHE=$GALLERYTAG_CACHE bash third_party/horovod/build.sh /opt/venv

# ---- runtime ----
FROM ${BASE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# openssh: the MPIJob launcher's horovodrun reaches the worker pods over ssh. Horovod is built
# with Gloo and without MPI (build.sh), so the image carries no OpenMPI.
# sshd runs as uid 1000 on port 2222 with the operator's key (mounted at /home/mpiuser/.ssh)
# as host key; the image's own host keys are removed, no pod should share them.
# Not version-pinned (hadolint DL3008): openssh takes bookworm security updates and the archive
# drops the superseded version, so an exact pin would break the build at the next fix.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client openssh-server \
    && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \
    && useradd --uid 1000 --user-group --create-home --shell /bin/bash mpiuser \
    && mkdir -p /etc/gallerytag \
    && printf '%s\n' 'Port 2222' 'PidFile /tmp/sshd.pid' 'HostKey /home/mpiuser/.ssh/id_rsa' \
        'AuthorizedKeysFile .ssh/authorized_keys' 'StrictModes no' 'PasswordAuthentication no' \
        'KbdInteractiveAuthentication no' 'UsePAM no' > /etc/gallerytag/sshd_config \
    && printf '%s\n' 'Host *' '    Port 2222' '    StrictHostKeyChecking no' \
        '    UserKnownHostsFile /dev/null' > /etc/ssh/ssh_config.d/gallerytag.conf
COPY --from=builder /opt/venv /opt/venv
# The project itself last, in small layers of its own: a code change rebuilds only these,
# not the 3 GB of dependencies above.
COPY pyproject.toml README.md /src/
COPY gallerytag /src/gallerytag
COPY components /src/components
COPY models /src/models
COPY pipelines /src/pipelines
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/pip install --no-cache-dir --no-deps \
        --no-build-isolation /src \
    && /opt/venv/bin/pip check \
    && rm -rf /src
# Pods run with a read-only root filesystem and an emptyDir at /tmp: every cache goes there,
# HOME too (horovodrun writes ~/.horovod; ssh and sshd take the home from /etc/passwd, so
# the keys stay at /home/mpiuser/.ssh). No git in the image: MLflow's GitPython stays quiet.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp/home \
    GIT_PYTHON_REFRESH=quiet \
    GALLERYTAG_HOME=/tmp/gallerytag \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /home/mpiuser
ENTRYPOINT ["gallerytag"]
CMD ["--help"]
