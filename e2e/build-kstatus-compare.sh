#!/usr/bin/env bash
# Build e2e/kstatus-compare (Helm's Go kstatus behind a JSON-in/JSON-out command) into
# $RUDDER_CACHE/tools/kstatus-compare and print the binary's path on stdout. The build is
# skipped when the binary there was built from the same source (hash of go.mod, go.sum,
# main.go and the Go version), so test sessions after the first pay nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$here/kstatus-compare
cache=${RUDDER_CACHE:-$HOME/.cache/rudder}
# Same settings as build-tools.sh, so packages it already compiled are reused from GOCACHE.
export GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build GOFLAGS=-mod=mod GOTOOLCHAIN=auto
export CGO_ENABLED=0
tools=$cache/tools
out=$tools/kstatus-compare
stamp=$out.source-hash

hash=$(cd "$src" && { cat go.mod go.sum main.go; go env GOVERSION; } | sha256sum | cut -d' ' -f1)
if [ -x "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
  echo "$out"
  exit 0
fi

echo "[build-kstatus-compare] building $out" >&2
mkdir -p "$tools"
tmp=$(mktemp "$tools/.kstatus-compare.XXXXXX")
trap 'rm -f "$tmp"' EXIT
(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$tmp" .)
chmod 0755 "$tmp"
mv "$tmp" "$out"
echo "$hash" >"$stamp"
echo "$out"
