#!/bin/sh
# Builds the real Kubernetes components of the real-node tests (plexusctl cluster) from the pinned Go
# module test/cluster/components (go.mod + go.sum: k8s.io/kubernetes, its staging modules, etcd), once
# per version, into .tools/k8s/<version>/. A fresh machine takes ~20 min on 2 cores (README); after
# that it is a no-op. Needs Go >= 1.26 and the Go module proxy.
set -eu
cd "$(dirname "$0")/.."
MOD=test/cluster/components
VERSION=$(sed -n "s|^[[:space:]]*k8s.io/kubernetes \(v[0-9.]*\).*|\1|p" "$MOD/go.mod" | head -n 1)
OUT=.tools/k8s/$VERSION
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd"
# The stamp is the go.sum the binaries were built from: a changed pin rebuilds.
stamp=$(sha256sum "$MOD/go.mod" "$MOD/go.sum" | sha256sum | cut -c1-16)
if [ -f "$OUT/.built-$stamp" ]; then exit 0; fi
# The machines carry Go in /usr/local/go; a shell without it on PATH still finds it.
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-cluster: Go >= 1.26 is needed to build the Kubernetes components" >&2; exit 1; }
echo "build-cluster: building Kubernetes $VERSION components into $OUT (first time on a machine: ~20 min)"
mkdir -p "$OUT"
major=$(echo "$VERSION" | sed 's/^v\([0-9]*\)\..*/\1/')
minor=$(echo "$VERSION" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')
V=k8s.io/component-base/version
start=$(date +%s)
(cd "$MOD" && CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X $V.gitVersion=$VERSION -X $V.gitMajor=$major -X $V.gitMinor=$minor -X $V.gitTreeState=clean" \
  -o "../../../$OUT/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl ./etcd)
for b in $BINS; do [ -x "$OUT/$b" ] || { echo "build-cluster: $OUT/$b was not built" >&2; exit 1; }; done
rm -f "$OUT"/.built-*
echo "$(( $(date +%s) - start )) s" > "$OUT/.built-$stamp"
echo "build-cluster: done in $(( $(date +%s) - start )) s"
