#!/bin/sh
# Installs what Plexus needs on a Debian bookworm machine (run as root) and builds it.
# Idempotent: packages already present are not reinstalled; npm ci runs only when the lock changed.
set -eu
cd "$(dirname "$0")/.."

# A C compiler and static libc (the N-API addon, the static shim), the reference CNI plugins (delegates),
# the container runtimes of the test rig, the tools the tests use as oracles, and openssl (the CA of
# the API double and of plexusctl cluster).
PACKAGES="gcc libc6-dev containernetworking-plugins containerd runc podman catatonit busybox-static iproute2 iptables nftables procps strace openssl"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >/dev/null
fi

# Debian's kubectl (kubernetes-client 1.20), a real client the API server double is checked against.
# Extracted into .tools/ rather than installed: images may ship another kubectl at /usr/bin/kubectl.
if [ ! -x .tools/kubectl/usr/bin/kubectl ]; then
  mkdir -p .tools/kubectl
  (cd .tools && apt-get download kubernetes-client >/dev/null 2>&1 || { apt-get update -qq && apt-get download kubernetes-client >/dev/null; })
  dpkg-deb -x .tools/kubernetes-client_*.deb .tools/kubectl
  rm -f .tools/kubernetes-client_*.deb
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run --silent build
