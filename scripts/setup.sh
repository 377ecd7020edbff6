#!/usr/bin/env bash
# One-time set-up on a fresh Debian 12 machine (as root): the Debian packages podnet and its
# tests use, the npm packages, and the build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(gcc libc6-dev iproute2 nftables iptables conntrack socat procps util-linux iputils-ping
      containernetworking-plugins containerd runc podman busybox-static
      etcd-server etcd-client iperf3 tcpdump bird2 frr
      chromium)  # chromium: the lab UI's browser test (playwright-core drives /usr/bin/chromium)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # bird2's and frr's packages start their daemons in the root namespace after install; the lab
  # runs them in its own namespaces only, so service starts are refused while installing (the
  # Debian way: policy-rc.d exit 101), unless the machine has a policy of its own
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
npm ci --no-fund --no-audit --loglevel=warn
npm run build
