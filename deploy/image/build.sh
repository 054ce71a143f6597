#!/usr/bin/env bash
# `make image`: the container image, built by buildah from the repository's Dockerfile as it is,
# on a machine without a Docker engine or a reachable registry.
#
# The Dockerfile's base (ARG PYTHON_IMAGE, python:3.11-slim for Docker users) is replaced by one
# made here from Debian's packages: mmdebstrap writes a bookworm root filesystem with Python 3.11
# (python3, python3-venv, python-is-python3 for the `python` the Dockerfile runs, ca-certificates
# for the feed's TLS) and buildah imports it. It is kept and reused while its recipe is unchanged
# (REBUILD_BASE=1 makes it again, with today's packages).
#
# pip inside the build reaches the package index the way pip on this machine does: its effective
# settings (PIP_* variables and pip.conf files) are written to a pip.conf, with the CA bundle it
# trusts, in a directory mounted read-only at /mnt during RUN steps and named by the Dockerfile's
# PIP_CONFIG_FILE build argument. Nothing of it is in the image.
#
# Settings (environment): IMAGE (default localhost/snooker-ingest:VERSION), BASE_IMAGE,
# STORAGE_DRIVER (vfs), BUILDAH_ISOLATION (chroot), REBUILD_BASE.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in buildah mmdebstrap; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is not installed (apt-get install buildah mmdebstrap)" >&2; exit 1; }
done

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
IMAGE=${IMAGE:-localhost/snooker-ingest:$VERSION}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
ISOLATION=${BUILDAH_ISOLATION:-chroot}
buildah=(buildah --storage-driver "$STORAGE_DRIVER")

SUITE=bookworm
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
# what python:3.11-slim also leaves out; the copyright files stay
DPKG_OPTS=(
    'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*'
    'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias'
)
recipe=$(printf '%s\n' "$SUITE" "$PACKAGES" "${DPKG_OPTS[@]}" | sha256sum | cut -c1-12)
BASE_IMAGE=${BASE_IMAGE:-localhost/snooker-ingest-base:$SUITE-$recipe}

work=$(mktemp -d "${TMPDIR:-/tmp}/snooker-ingest-image.XXXXXX")
container=
cleanup() {
    [ -z "$container" ] || "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

# 1. the base image ----------------------------------------------------------------------------
if [ -z "${REBUILD_BASE:-}" ] && "${buildah[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "base image: $BASE_IMAGE (kept from an earlier build; REBUILD_BASE=1 makes it again)"
else
    started=$(date +%s)
    echo "base image: $BASE_IMAGE from Debian $SUITE ($PACKAGES) ..."
    dpkgopt=()
    for opt in "${DPKG_OPTS[@]}"; do dpkgopt+=(--dpkgopt="$opt"); done
    mmdebstrap --quiet --variant=minbase --include="$PACKAGES" "${dpkgopt[@]}" \
        "$SUITE" "$work/rootfs.tar"
    container=$("${buildah[@]}" from scratch)
    "${buildah[@]}" add --quiet "$container" "$work/rootfs.tar" /
    # what python:3.11-slim sets too: RUN steps and `ENV PATH=/opt/venv/bin:$PATH` rely on it
    "${buildah[@]}" config \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.title="snooker-ingest base: Debian $SUITE, Python 3" \
        --label snooker-ingest.base-recipe="$recipe" \
        "$container"
    "${buildah[@]}" commit --quiet --rm "$container" "$BASE_IMAGE" >/dev/null
    container=
    rm -f "$work/rootfs.tar"
    echo "base image: built in $(elapsed "$started")"
fi

# 2. pip's settings on this machine, for pip inside the build ------------------------------------
mkdir "$work/pip"
INDEX_URL=$(python3 - "$work/pip" <<'PY'
import shutil
import sys
from pathlib import Path

out = Path(sys.argv[1])
mount = "/mnt"  # where the build sees `out`
try:  # pip's own reading of PIP_* variables and every pip.conf, in its order of precedence
    from pip._internal.commands import create_command

    o, _ = create_command("install").parse_args([])
    index, extra, links = o.index_url, o.extra_index_urls, o.find_links
    hosts, cert, client_cert = o.trusted_hosts, o.cert, o.client_cert
    timeout, retries, proxy = o.timeout, o.retries, o.proxy
except Exception as exc:  # no pip here: pip's defaults, PyPI
    print(f"pip settings of this machine not readable ({exc}): PyPI", file=sys.stderr)
    index, extra, links, hosts = "https://pypi.org/simple", [], [], []
    cert = client_cert = proxy = None
    timeout, retries = 15.0, 5


def remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


local = [u for u in [index, *extra, *links] if not remote(u)]
if local:  # a directory of this machine is not in the build; PyPI serves the same packages
    print("pip sources on this machine's disk, not seen by the build:", *local, file=sys.stderr)
lines = ["[global]", f"index-url = {index}"]
if [u for u in extra if remote(u)]:
    lines.append("extra-index-url = " + " ".join(u for u in extra if remote(u)))
if [u for u in links if remote(u)]:
    lines.append("find-links = " + " ".join(u for u in links if remote(u)))
if hosts:
    lines.append("trusted-host = " + " ".join(hosts))
for key, path in (("cert", cert), ("client-cert", client_cert)):
    if path:  # a copy: the build sees /mnt only
        shutil.copyfile(path, out / f"{key}.pem")
        lines.append(f"{key} = {mount}/{key}.pem")
lines += [f"timeout = {timeout:g}", f"retries = {retries}"]
if proxy:
    lines.append(f"proxy = {proxy}")
(out / "pip.conf").write_text("\n".join(lines) + "\n")
print(index)
PY
)
echo "pip in the build: $(grep -v '^\[' "$work/pip/pip.conf" | tr '\n' ';' | sed 's/;$//; s/;/; /g')"

# 3. the image -----------------------------------------------------------------------------------
previous=$("${buildah[@]}" inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
started=$(date +%s)
echo "image: $IMAGE (buildah bud, $ISOLATION isolation, $STORAGE_DRIVER storage) ..."
"${buildah[@]}" bud --isolation "$ISOLATION" --format docker --pull=never \
    --build-arg PYTHON_IMAGE="$BASE_IMAGE" \
    --build-arg PIP_INDEX_URL="$INDEX_URL" \
    --build-arg PIP_CONFIG_FILE=/mnt/pip.conf \
    --volume "$work/pip:/mnt:ro" \
    --build-arg VERSION="$VERSION" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --label org.opencontainers.image.base.name="$BASE_IMAGE" \
    --tag "$IMAGE" --file Dockerfile .
echo "image: $IMAGE built in $(elapsed "$started")"
# the image the tag named before, now nameless: removed, so that rebuilds do not pile up
current=$("${buildah[@]}" inspect --type image --format '{{.FromImageID}}' "$IMAGE")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    "${buildah[@]}" rmi "$previous" >/dev/null 2>&1 || true
fi
