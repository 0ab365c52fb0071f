#!/bin/sh
# Builds what the scale bench (bench/scale.ts, `npm run bench:scale`) runs beside Plexus, into .tools/:
# - KWOK v0.8.0 (sigs.k8s.io/kwok), pinned by the `tool` line of test/scale/kwok/go.mod, from the Go
#   module proxy: it keeps the simulated nodes and their pods alive against the real kube-apiserver;
# - the real Multus thick daemon (multus-daemon, multus-shim) v4.3.0, from a source tree of its public
#   repository k8snetworkplumbingwg/multus-cni at tag v4.3.0, given as the first argument (or
#   $MULTUS_SRC). It vendors its dependencies, so `go build -mod=vendor` needs no network. Without a
#   tree the bench runs without Multus and says so.
# Each is built once (a stamp); KWOK ~3 min on 2 cores the first time, Multus ~2 min.
set -eu
cd "$(dirname "$0")/.."
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-scale: Go >= 1.26 is needed" >&2; exit 1; }

MOD=test/scale/kwok
KWOK_VERSION=$(sed -n "s|^[[:space:]]*sigs.k8s.io/kwok \(v[0-9.]*\).*|\1|p" "$MOD/go.mod" | head -n 1)
OUT=.tools/kwok/$KWOK_VERSION
stamp=$(sha256sum "$MOD/go.mod" "$MOD/go.sum" | sha256sum | cut -c1-16)
if [ ! -f "$OUT/.built-$stamp" ]; then
  echo "build-scale: building kwok $KWOK_VERSION into $OUT"
  mkdir -p "$OUT"
  start=$(date +%s)
  (cd "$MOD" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "../../../$OUT/kwok" sigs.k8s.io/kwok/cmd/kwok)
  # The kwok binary has no stages of its own (kwokctl adds them): its published "fast" node and pod
  # stages, with lease heartbeats, from the same module, as its config.
  dir=$(cd "$MOD" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  st=$dir/kustomize/stage
  for f in "$st/node/fast/node-initialize.yaml" "$st"/node/heartbeat-with-lease/node-*.yaml "$st/pod/fast/pod-ready.yaml" "$st/pod/fast/pod-complete.yaml" "$st/pod/fast/pod-delete.yaml"; do
    cat "$f"
    echo "---"
  done > "$OUT/stages.yaml"
  rm -f "$OUT"/.built-*
  echo "$(( $(date +%s) - start )) s" > "$OUT/.built-$stamp"
fi

MULTUS_VERSION=v4.3.0
OUT=.tools/multus/$MULTUS_VERSION
src=${1:-${MULTUS_SRC:-}}
if [ -x "$OUT/multus-daemon" ]; then exit 0; fi
if [ -z "$src" ] || [ ! -f "$src/cmd/multus-daemon/main.go" ] || [ ! -d "$src/vendor" ]; then
  echo "build-scale: no Multus source tree given: the scale bench runs without Multus." >&2
  echo "  To include it: get k8snetworkplumbingwg/multus-cni at tag $MULTUS_VERSION (it vendors its dependencies)" >&2
  echo "  and run: sh scripts/build-scale.sh /path/to/multus-cni" >&2
  exit 0
fi
echo "build-scale: building Multus $MULTUS_VERSION (thick) from $src into $OUT"
mkdir -p "$OUT"
out=$(pwd)/$OUT
(cd "$src" && CGO_ENABLED=0 go build -mod=vendor -trimpath -ldflags "-s -w" -o "$out/" ./cmd/multus-daemon ./cmd/multus-shim)
echo "build-scale: $OUT/multus-daemon"
