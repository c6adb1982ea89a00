# syntax=docker/dockerfile:1.7
# gallerytag, CPU image: the `gallerytag` command, and an MPIJob launcher/worker (sshd) for
# Horovod on Kubernetes (k8s/README.md). Build from the repository root:
#   docker build -t gallerytag:cpu .
# GPU image: Dockerfile.gpu.

# ---- builder: the same steps as `make setup`, into /opt/venv ----
FROM python:3.11-slim-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Horovod compiles from source (third_party/horovod/build.sh); versions are bookworm's.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        cmake=3.25.1-1 g++=4:12.2.0-3 make=4.3-4.1 patch=2.7.6-7 \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    GALLERYTAG_CACHE=/cache/gallerytag
WORKDIR /src
COPY requirements.txt constraints.txt ./
# The image needs the runtime pins only: everything above requirements.txt's
# "# test and tooling" block (pytest, ruff, kubectl, hadolint stay out).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install "pip==25.3" \
    && sed '/^# test and tooling/,$d' requirements.txt > /tmp/requirements-runtime.txt \
    && /opt/venv/bin/pip install -r /tmp/requirements-runtime.txt -c constraints.txt
COPY third_party/horovod third_party/horovod
# build.sh caches the wheel under $GALLERYTAG_CACHE, keyed by Horovod, TF, Python and patch;
# the BuildKit cache mount keeps it across image builds.
RUN --mount=type=cache,target=/cache \
    bash third_party/horovod/build.sh /opt/venv
COPY pyproject.toml README.md ./
COPY gallerytag gallerytag
COPY components components
COPY models models
COPY pipelines pipelines
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
    && /opt/venv/bin/pip check

# ---- runtime ----
FROM python:3.11-slim-bookworm
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
# Pods run with a read-only root filesystem and an emptyDir at /tmp: every cache goes there.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/home/mpiuser \
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
