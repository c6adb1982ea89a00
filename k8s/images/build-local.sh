#!/usr/bin/env bash
# Build gallerytag's images with podman/buildah, no daemon, on a VM like the development
# machine (docs/operations.md, "Building the images"). `make images` calls this when docker
# has no daemon.
#
#   k8s/images/build-local.sh base            print the CPU base to use; make it if needed
#   k8s/images/build-local.sh cpu TAG         build Dockerfile as TAG
#   k8s/images/build-local.sh gpu TAG         build Dockerfile.gpu as TAG (needs its base)
#
# Why each flag (verified on the development machine, /work/shared/DESIGN.md):
# - `--isolation chroot` and runc (containers.conf): no user-namespace-capable OCI runtime
#   setup there; crun fails on hybrid cgroups, default ulimits fail setrlimit.
# - `--network host` while building: the default 10.88.x bridge does not exist; the build
#   needs the package registries (apt, pip).
# - the host's CA bundle, mounted for pip and apt (PIP_CERT): registries are reached through
#   a TLS-inspecting proxy there.
# - the public base `python:3.11-slim-bookworm` cannot be pulled there, so when the pull
#   fails a base with the same layout (Debian bookworm's Python 3.11 as `python`, a working
#   `venv`) is made with debootstrap and imported; its tarball is cached.
# - `--format docker`: the OCI format drops SHELL (bash with pipefail) from the Dockerfiles.
# - `~/.cache/gallerytag` is mounted at /host-cache (GALLERYTAG_CACHE): the Horovod wheel
#   (built once, third_party/horovod/build.sh) and a wheelhouse of the pinned stack live
#   there across builds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
public_base=${GALLERYTAG_PUBLIC_BASE:-docker.io/library/python:3.11-slim-bookworm}
local_base=localhost/gallerytag-base:bookworm-py311
cache=${GALLERYTAG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gallerytag}
host_ca=${GALLERYTAG_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the local base holds beyond minbase: Debian's Python 3.11 with venv, named `python` as
# in the public image (python3-distutils: debootstrap does not pick a provider for venv's
# virtual dependency). Changing the list changes the cached tarball's name.
base_packages=python3.11,python3.11-venv,python3-distutils,python-is-python3
base_tar="$cache/base/bookworm-minbase-$(echo "$base_packages" | sha256sum | cut -c1-8).tar"

log() { echo "build-local: $*" >&2; }

need() {
  local missing=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  ((${#missing[@]} == 0)) && return 0
  log "missing: ${missing[*]}. Install them: apt-get install buildah podman runc debootstrap uidmap fuse-overlayfs"
  exit 1
}

# The image to build FROM: the public base when it can be pulled (or is already here), else
# the local bookworm base, imported from the cached tarball or made by debootstrap (~2 min).
prepare_base() {
  need podman
  if podman image exists "$public_base" 2>/dev/null \
    || timeout 60 podman pull -q "$public_base" >/dev/null 2>&1; then
    echo "$public_base"; return
  fi
  if podman image exists "$local_base"; then
    log "public base $public_base unreachable; using $local_base"
    echo "$local_base"; return
  fi
  if [ ! -s "$base_tar" ]; then
    need debootstrap
    [ "$(id -u)" = 0 ] || { log "debootstrap needs root to make $base_tar; run this as root once"; exit 1; }
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    log "public base $public_base unreachable; debootstrap bookworm (minbase + $base_packages) from $mirror"
    debootstrap --variant=minbase --include="$base_packages" bookworm "$dir" "$mirror" >&2
    # Security updates as in the public image; no apt lists or package downloads kept.
    printf 'deb %s bookworm bookworm-updates main\ndeb %s bookworm-security main\n' \
      "$mirror" "${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}" \
      > "$dir/etc/apt/sources.list"
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb
    mkdir -p "$(dirname "$base_tar")"
    tar -C "$dir" --numeric-owner -cf "$base_tar.part" .
    mv "$base_tar.part" "$base_tar"
    rm -rf "$dir"
  fi
  log "importing $base_tar as $local_base"
  podman import -q --change 'CMD ["python"]' --change 'ENV LANG=C.UTF-8' "$base_tar" "$local_base" >/dev/null
  echo "$local_base"
}

build() {
  local dockerfile=$1 tag=$2
  shift 2
  need buildah podman runc
  mkdir -p "$cache"
  local mounts=(-v "$cache:/host-cache" --build-arg GALLERYTAG_CACHE=/host-cache)
  if [ -f "$host_ca" ]; then
    mounts+=(-v "$host_ca:/run/host-ca.crt:ro" --build-arg HOST_CA=/run/host-ca.crt)
  fi
  buildah bud --isolation chroot --runtime runc --network host --layers --force-rm --format docker \
    "${mounts[@]}" "$@" -f "$root/$dockerfile" -t "$tag" "$root" >&2
  podman image inspect --format '{{.Id}} {{.Size}}' "$tag" \
    | awk -v t="$tag" '{ printf "build-local: built %s (id %.12s, %.0f MB)\n", t, $1, $2 / 1e6 }' >&2
}

case ${1:-} in
  base) prepare_base ;;
  cpu)
    tag=${2:?usage: build-local.sh cpu TAG}
    base=$(prepare_base)  # its own line: set -e stops here when no base can be had
    build Dockerfile "$tag" --build-arg BASE="$base"
    ;;
  gpu)
    gpu_base=docker.io/tensorflow/tensorflow:2.21.0-gpu
    if ! podman image exists "$gpu_base" && ! timeout 120 podman pull -q "$gpu_base" >/dev/null 2>&1; then
      log "GPU image not built: its base $gpu_base cannot be pulled here (docs/operations.md)"
      exit 3
    fi
    build Dockerfile.gpu "${2:?usage: build-local.sh gpu TAG}" --build-arg BASE="$gpu_base"
    ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
