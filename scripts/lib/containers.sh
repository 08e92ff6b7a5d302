# A container engine for the image test (tests/python/test_packaging.py).
# Sourced by scripts/test.
#
# - Docker: Debian's docker.io. When no daemon answers, one is started for the
#   run with no bridge network and no iptables rules, so it changes nothing on
#   the machine's network: the test's containers have only their own loopback
#   (`--network none`), and image builds use the host's network to reach
#   Debian's package archive.
# - The runtime image's base, debian:bookworm-slim: pulled when a registry
#   answers; where none is reachable, the same distribution is built from
#   Debian's own packages with debootstrap (minbase) and imported under that
#   name, once per machine.
#
# Exports AGORA_TEST_DOCKER=1 when both are ready. A machine that cannot run
# containers (no root, no kernel support) must say so explicitly with
# AGORA_NO_CONTAINER_ENGINE="<why>": the image test then reports itself as
# skipped with that reason instead of failing.

CONTAINERS_STARTED_DOCKERD=""

ensure_container_engine() {
  local work="$1"
  if [ -n "${AGORA_NO_CONTAINER_ENGINE:-}" ]; then
    echo "no container engine: $AGORA_NO_CONTAINER_ENGINE (the image test is skipped)"
    return 0
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
  if ! $sudo docker info >/dev/null 2>&1; then
    echo "starting dockerd (no bridge, no iptables; log in $work/dockerd.log)"
    $sudo dockerd --bridge=none --iptables=false --ip-masq=false \
      --pidfile "$work/dockerd.pid" > "$work/dockerd.log" 2>&1 &
    CONTAINERS_STARTED_DOCKERD="$!"
    local attempt
    for attempt in $(seq 60); do
      $sudo docker info >/dev/null 2>&1 && break
      sleep 0.5
    done
    if ! $sudo docker info >/dev/null 2>&1; then
      echo "dockerd did not start (see $work/dockerd.log); on a machine that cannot run" >&2
      echo "containers set AGORA_NO_CONTAINER_ENGINE=\"<why>\" to run the other tests" >&2
      tail -5 "$work/dockerd.log" >&2
      return 1
    fi
  fi
  if ! $sudo docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    if ! timeout 120 $sudo docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
      echo "no image registry answers: building debian:bookworm-slim with debootstrap"
      local rootfs="$work/bookworm-rootfs"
      $sudo rm -rf "$rootfs"
      $sudo debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
        > "$work/debootstrap.log" 2>&1 || { tail -5 "$work/debootstrap.log" >&2; return 1; }
      $sudo tar -C "$rootfs" -c . | $sudo docker import - debian:bookworm-slim >/dev/null
      $sudo rm -rf "$rootfs"
    fi
  fi
  export AGORA_TEST_DOCKER=1
}

stop_container_engine() {
  if [ -n "$CONTAINERS_STARTED_DOCKERD" ]; then
    kill "$CONTAINERS_STARTED_DOCKERD" 2>/dev/null || true
    wait "$CONTAINERS_STARTED_DOCKERD" 2>/dev/null || true
    CONTAINERS_STARTED_DOCKERD=""
  fi
}
