#!/bin/sh
# Builds the real components of the real-node tests (plexusctl cluster) from pinned Go modules, once per
# version (a stamp of the module's go.sum), into .tools/:
# - .tools/k8s/<version>/: kube-apiserver, controller-manager, scheduler, kubelet, kubectl, etcd, from
#   test/cluster/components (k8s.io/kubernetes, its staging modules, etcd);
# - .tools/containerd/<version>/: containerd 2.x, its runc shim and ctr, from test/cluster/containerd
#   (the DRA end-to-end test: Debian's containerd 1.6 ignores the CDI devices kubelet passes).
# A fresh machine takes ~20 min on 2 cores (README); after that it is a no-op. Needs Go >= 1.26 and the
# Go module proxy.
set -eu
cd "$(dirname "$0")/.."
# The machines carry Go in /usr/local/go; a shell without it on PATH still finds it.
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-cluster: Go >= 1.26 is needed to build the Kubernetes components" >&2; exit 1; }

# build <module dir> <out dir> <tags> <ldflags> <binaries> <packages...>: skipped when the stamp matches.
build() {
  mod=$1 out=$2 tags=$3 ldflags=$4 bins=$5
  shift 5
  stamp=$(sha256sum "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-16)
  if [ -f "$out/.built-$stamp" ]; then return 0; fi
  echo "build-cluster: building $bins into $out"
  mkdir -p "$out"
  start=$(date +%s)
  # Static (CGO_ENABLED=0); the modules sit three levels below the repository.
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" -o "../../../$out/" "$@")
  for b in $bins; do [ -x "$out/$b" ] || { echo "build-cluster: $out/$b was not built" >&2; exit 1; }; done
  rm -f "$out"/.built-*
  echo "$(( $(date +%s) - start )) s" > "$out/.built-$stamp"
  echo "build-cluster: done in $(( $(date +%s) - start )) s"
}

MOD=test/cluster/components
VERSION=$(sed -n "s|^[[:space:]]*k8s.io/kubernetes \(v[0-9.]*\).*|\1|p" "$MOD/go.mod" | head -n 1)
major=$(echo "$VERSION" | sed 's/^v\([0-9]*\)\..*/\1/')
minor=$(echo "$VERSION" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')
V=k8s.io/component-base/version
build "$MOD" ".tools/k8s/$VERSION" "" "-X $V.gitVersion=$VERSION -X $V.gitMajor=$major -X $V.gitMinor=$minor -X $V.gitTreeState=clean" \
  "kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl ./etcd

MOD=test/cluster/containerd
VERSION=$(sed -n "s|^[[:space:]]*github.com/containerd/containerd/v2 \(v[0-9.]*\).*|\1|p" "$MOD/go.mod" | head -n 1)
# Without the cgo-only btrfs snapshotter: the tests use the native one.
build "$MOD" ".tools/containerd/$VERSION" no_btrfs "-X github.com/containerd/containerd/v2/version.Version=$VERSION" \
  "containerd containerd-shim-runc-v2 ctr" \
  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/ctr
