#!/usr/bin/env bash
# Build fileflow's images without a registry, and check them: `make images`, `make test-images`.
#
#   docker/images.sh build    debootstrap a Debian bookworm base (cached), build every target of
#                             docker/Dockerfile with buildah (chroot isolation, vfs storage)
#   docker/images.sh test     build, then in every image, as its non-root user: check its tools,
#                             run a real step on a sample (docker/smoke.py), print its size;
#                             remove every image and container it built (the base tarball stays)
#   docker/images.sh clean    remove the buildah storage (the base tarball stays)
#
# Everything lives under .images/ (ignored by git): a private buildah storage (never the
# machine's, so other builds on the machine are left alone) and cache/debian-bookworm.tar, the
# debootstrapped root filesystem. The Debian mirror is the one apt on this machine uses.
# Needs root; installs Debian's buildah and debootstrap when missing.
set -euo pipefail
SMOKE_SUMMARY="images: 0 passed, 0 failed"  # set by smoke()
cd "$(dirname "$0")/.."

TARGETS=(${IMAGE_TARGETS:-mediator base ocr office video})
TOP=${FILEFLOW_IMAGES_DIR:-$PWD/.images}
CACHE=$TOP/cache
STORE=$TOP/storage
BASE_TAR=$CACHE/debian-bookworm.tar
BASE_IMAGE=localhost/fileflow-debian:bookworm
TAG=${IMAGE_TAG:-test}
NICE=(nice -n 10)
B=(buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver vfs)

log() { printf '%s images: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

mirror() {
  # The first Debian archive apt is configured with (deb822 .sources or one-line .list).
  local uri
  uri=$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -v -- '-security' | grep '/debian/\?$' | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -hs -E '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}' | grep '/debian/\?$' | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

make_base_tar() {
  [ -s "$BASE_TAR" ] && { log "base: cached $BASE_TAR"; return; }
  local m rootfs t0=$SECONDS
  m=$(mirror)
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  log "base: debootstrap bookworm (minbase) from $m"
  "${NICE[@]}" debootstrap --variant=minbase --components=main bookworm "$rootfs" "$m" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log"; rm -rf "$rootfs"; exit 1; }
  local sec=${m%/debian*}/debian-security
  cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $m bookworm main
deb $m bookworm-updates main
deb $sec bookworm-security main
SOURCES
  # As Debian's -slim images: no documentation, manual pages or translations in later installs.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/excludes" <<'EXCL'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EXCL
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$rootfs/etc/apt/apt.conf.d/99fileflow"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
         "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
  tar --numeric-owner -C "$rootfs" -cf "$BASE_TAR.tmp" .
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$rootfs"
  log "base: $(du -h "$BASE_TAR" | cut -f1) root filesystem in $((SECONDS - t0)) s"
}

import_base() {
  if "${B[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  local ctr
  ctr=$("${B[@]}" from --pull=never scratch)
  "${B[@]}" add "$ctr" "$BASE_TAR" / >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
  "${B[@]}" commit --rm -q "$ctr" "$BASE_IMAGE" >/dev/null
  log "base: imported as $BASE_IMAGE"
}

ensure_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || { echo "images: need root to install ${missing[*]} (and to build)" >&2; exit 1; }
  log "installing Debian packages: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
  ensure_tools
  mkdir -p "$CACHE" "$STORE"
  # The build machine's CA bundle (it may trust a TLS-inspecting proxy that Debian's does not),
  # for pip and uv in the build stage only.
  CA_ARGS=()
  local ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
  if [ -s "$ca" ]; then
    CA_ARGS=(-v "$ca:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt --build-arg SSL_CERT_FILE=/run/build-ca.crt)
  fi
  local t0=$SECONDS
  make_base_tar
  import_base
  for target in "${TARGETS[@]}"; do
    local t1=$SECONDS
    log "build $target"
    "${NICE[@]}" "${B[@]}" bud --isolation chroot --layers --pull=never -q "${CA_ARGS[@]}" \
      --build-arg DEBIAN_IMAGE="$BASE_IMAGE" -f docker/Dockerfile --target "$target" \
      -t "localhost/fileflow/$target:$TAG" . >"$CACHE/build-$target.log" 2>&1 \
      || { tail -40 "$CACHE/build-$target.log"; exit 1; }
    log "built $target in $((SECONDS - t1)) s"
  done
  log "all images built in $((SECONDS - t0)) s"
}

sizes() {
  "${B[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep 'fileflow/' | sort
}

smoke() {
  local failed=0 passed=0
  for target in "${TARGETS[@]}"; do
    local t1=$SECONDS ctr
    ctr=$("${B[@]}" from --pull=never "localhost/fileflow/$target:$TAG")
    # As the image's own user (10001), with the samples and the check script mounted read-only.
    if "${NICE[@]}" "${B[@]}" run --isolation chroot --user 10001:10001 \
         -v "$PWD/tests/samples:/samples:ro" -v "$PWD/docker/smoke.py:/smoke.py:ro" \
         "$ctr" -- /usr/bin/tini -s -- /app/.venv/bin/python /smoke.py "$target" /samples; then
      log "smoke $target: ok in $((SECONDS - t1)) s"; passed=$((passed + 1))
    else
      log "smoke $target: FAILED"; failed=$((failed + 1))
    fi
    "${B[@]}" rm "$ctr" >/dev/null
  done
  SMOKE_SUMMARY="images: $passed passed, $failed failed"
  echo "$SMOKE_SUMMARY"
  [ "$failed" -eq 0 ]
}

clean() {
  [ -d "$STORE" ] || return 0
  "${B[@]}" rm --all >/dev/null 2>&1 || true
  "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$STORE"
}

case "${1:-build}" in
  build) build; sizes ;;
  test)
    t0=$SECONDS
    trap clean EXIT
    build
    echo "image sizes:"; sizes
    rc=0; smoke || rc=$?
    log "test-images took $((SECONDS - t0)) s"
    echo "$SMOKE_SUMMARY"  # the closing line: how many images passed their checks
    exit $rc ;;
  smoke) sizes; smoke ;;  # the checks alone, on images already built
  clean) clean ;;
  *) echo "usage: $0 build|test|smoke|clean" >&2; exit 2 ;;
esac
