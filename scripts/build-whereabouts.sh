#!/bin/sh
# Builds whereabouts, the baseline of the IPAM benchmark (bench/ipam.ts), from the Go module proxy:
# the module github.com/k8snetworkplumbingwg/whereabouts at a pinned version, built with its own go.mod
# from the module cache into .tools/whereabouts/<version>/ (with its CRDs beside it). Nothing of it is
# committed. Once per version; ~2 min on 2 cores the first time.
set -eu
cd "$(dirname "$0")/.."
VERSION=v0.9.2
OUT=.tools/whereabouts/$VERSION
if [ -x "$OUT/whereabouts" ] && [ -d "$OUT/crds" ]; then exit 0; fi
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-whereabouts: Go is needed" >&2; exit 1; }
dir=$(go mod download -json "github.com/k8snetworkplumbingwg/whereabouts@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "build-whereabouts: the module proxy did not give whereabouts $VERSION" >&2; exit 1; }
mkdir -p "$OUT/crds"
out=$(pwd)/$OUT
(cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/whereabouts" ./cmd/)
cp "$dir"/doc/crds/whereabouts.cni.cncf.io_*.yaml "$OUT/crds/"
chmod -R u+w "$OUT"
echo "build-whereabouts: $OUT/whereabouts"
