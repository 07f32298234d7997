#!/usr/bin/env bash
# Build the pinned Kubernetes, etcd, kwok, Helm, cosign and kustomize binaries from their
# published Go modules, caching each by name and version under $RUDDER_CACHE (default
# ~/.cache/rudder); and the Wasm modules built from this repository (wasm/kustomize, the
# post-renderer fixtures in e2e/wasm-plugins), cached by a hash of their sources.
# Afterwards $RUDDER_CACHE/tools holds plain-named links to the pinned builds:
#   kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm helm3 cosign
#   kustomize kustomize.wasm wasm-plugins/
# and, only when asked for (`build-tools.sh flux`, for the benchmark's --flux; not in the
# default list): helm-controller source-controller
# A warm run only re-links; a cold run on 2 cores takes tens of minutes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${RUDDER_CACHE:-$HOME/.cache/rudder}
export GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build GOFLAGS=-mod=mod GOTOOLCHAIN=auto
export CGO_ENABLED=0
builds=$cache/builds
tools=$cache/tools
mkdir -p "$builds" "$tools"

log() { printf '[build-tools] %s\n' "$*" >&2; }

# done_marker DIR: a build counts as cached only once it completed.
is_built() { [ -f "$1/.complete" ]; }

# Staging modules of k8s.io/kubernetes are required at v0.0.0 and replaced by local paths
# that a dependency's replace lines cannot reach: map each to its published v0.X.Y.
build_kubernetes() {
  local v=$KUBERNETES_VERSION out=$builds/kubernetes-$KUBERNETES_VERSION
  is_built "$out" && return 0
  log "building Kubernetes $v (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)"
  local work; work=$(mktemp -d)
  local staging=v0.${v#v1.}
  (
    cd "$work"
    go mod init rudder.local/k8s-build >/dev/null 2>&1
    go mod edit -require "k8s.io/kubernetes@$v"
    local gomod; gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | while read -r m; do
      go mod edit -replace "$m=$m@$staging"
    done
    printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n)\n' > tools.go
    go mod tidy >/dev/null
    mkdir -p "$out"
    go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$v" | cut -d. -f2)" \
      -o "$out/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  )
  rm -rf "$work"
  touch "$out/.complete"
}

# etcd's server module replaces its sibling modules with local paths as well.
build_etcd() {
  local v=$ETCD_VERSION out=$builds/etcd-$ETCD_VERSION
  is_built "$out" && return 0
  log "building etcd $v"
  local work; work=$(mktemp -d)
  (
    cd "$work"
    go mod init rudder.local/etcd-build >/dev/null 2>&1
    go mod edit -require "go.etcd.io/etcd/server/v3@$v"
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      go mod edit -replace "go.etcd.io/etcd/$m=go.etcd.io/etcd/$m@$v"
    done
    printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' > tools.go
    go mod tidy >/dev/null
    mkdir -p "$out"
    go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$work"
  touch "$out/.complete"
}

# replace_lines GOMOD: its replace directives, one `OLD [V] => NEW [V]` a line.
replace_lines() {
  awk '{ sub(/\/\/.*/, "") }
       /^replace[ \t]*\(/ { block = 1; next }
       block && /^[ \t]*\)/ { block = 0; next }
       /^replace[ \t]/ { sub(/^replace[ \t]+/, ""); print; next }
       block && /=>/ { sub(/^[ \t]+/, ""); print }' "$1"
}

# go_main_of_module NAME MODULE VERSION: the root main package of MODULE@VERSION, whose
# go.mod has replace lines (`go install pkg@version` refuses those), as OUT/NAME. Built in a
# scratch module that requires it and repeats its replace lines, as its own build would
# apply them; one to a local path (an api/ submodule) becomes that module published at
# VERSION. Extra `OLD=NEW` replace arguments follow.
go_main_of_module() {
  local name=$1 module=$2 v=$3; shift 3
  local out=$builds/$name-$v
  is_built "$out" && return 0
  log "building $name $v ($module)"
  local work; work=$(mktemp -d)
  (
    cd "$work"
    go mod init "rudder.local/$name-build" >/dev/null 2>&1
    go mod edit -require "$module@$v"
    local gomod; gomod=$(go mod download -json "$module@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    replace_lines "$gomod" | while read -r old a b c d; do
      oldv="" new="" newv=""
      if [ "$a" = "=>" ]; then new=$b newv=$c; else oldv=$a new=$c newv=$d; fi
      case $new in ./* | ../*) new=$old newv=$v ;; esac
      go mod edit -replace "$old${oldv:+@$oldv}=$new${newv:+@$newv}"
    done
    for r in "$@"; do go mod edit -replace "$r"; done
    # A main package cannot be imported (so no tools.go and tidy): -mod=mod (GOFLAGS) lets
    # the build itself complete go.mod and go.sum.
    mkdir -p "$out"
    go build -trimpath -ldflags "-s -w" -o "$out/$name" "$module"
  )
  rm -rf "$work"
  touch "$out/.complete"
}

# go_install NAME PACKAGE VERSION BINARY [LDFLAGS]: a module without replace lines.
go_install() {
  local name=$1 pkg=$2 v=$3 bin=$4 ldflags=${5:-}
  local out=$builds/$name-$v
  is_built "$out" && return 0
  log "building $name $v"
  mkdir -p "$out"
  GOBIN=$out go install -trimpath -ldflags "-s -w $ldflags" "$pkg@$v"
  [ -x "$out/$bin" ] || { log "$pkg did not produce $bin"; return 1; }
  touch "$out/.complete"
}

link() { ln -sfn "$1" "$tools/$2"; }

# source_hash DIR: a hash of the Go sources (go.mod, go.sum, *.go) and plugin.yaml files
# under DIR, with their paths, and of the Go version, so that a change to any rebuilds.
source_hash() {
  (
    cd "$1"
    find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name plugin.yaml \) -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
    go env GOVERSION
  ) | sha256sum | cut -c1-16
}

# wasm_build OUT PACKAGE...: a Go main package as an Extism plugin (a WASI reactor whose
# //go:wasmexport functions the host calls), built in the module of the current directory.
wasm_build() {
  local out=$1; shift
  GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags "-s -w" -o "$out" "$@"
}

# The kustomize post-renderer the operator runs (wasm/kustomize, kustomize's Go API in Wasm).
kustomize_wasm_dir() { echo "$builds/kustomize-wasm-$(source_hash "$here/../wasm/kustomize")"; }
build_kustomize_wasm() {
  local out; out=$(kustomize_wasm_dir)
  is_built "$out" && return 0
  log "building kustomize.wasm from wasm/kustomize"
  mkdir -p "$out"
  (cd "$here/../wasm/kustomize" && wasm_build "$out/kustomize.wasm" .)
  touch "$out/.complete"
}

# The post-renderer plugins of the end-to-end tests (e2e/wasm-plugins, one Go module, one main
# package per plugin directory). Each becomes OUT/NAME/{plugin.yaml,plugin.wasm} and, packaged
# by the pinned Helm 4 (so helm4 is built first), OUT/NAME-VERSION.tgz.
wasm_plugins_dir() {
  echo "$builds/wasm-plugins-$( { source_hash "$here/wasm-plugins"; echo "$HELM4_VERSION"; } | sha256sum | cut -c1-16)"
}
build_wasm_plugins() {
  local out; out=$(wasm_plugins_dir)
  is_built "$out" && return 0
  build_helm4
  log "building the post-renderer fixtures in e2e/wasm-plugins"
  rm -rf "$out"; mkdir -p "$out"
  local src=$here/wasm-plugins dir name
  for dir in "$src"/*/; do
    name=$(basename "$dir")
    [ -f "$dir/plugin.yaml" ] || continue
    mkdir -p "$out/$name"
    cp "$dir/plugin.yaml" "$out/$name/plugin.yaml"
    (cd "$src" && wasm_build "$out/$name/plugin.wasm" "./$name")
    # A tarball of the staged directory (plugin.yaml + plugin.wasm only, not the sources).
    "$builds/helm4-$HELM4_VERSION/helm" plugin package --sign=false "$out/$name" -d "$out" >/dev/null
  done
  touch "$out/.complete"
}

build_helm4() {
  go_install helm4 helm.sh/helm/v4/cmd/helm "$HELM4_VERSION" helm \
    "-X helm.sh/helm/v4/internal/version.version=$HELM4_VERSION"
}

want=${*:-kubernetes etcd kwok helm4 helm3 cosign kustomize kustomize-wasm wasm-plugins}
start=$(date +%s)
for component in $want; do
  case $component in
    kubernetes)
      build_kubernetes
      for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
        link "$builds/kubernetes-$KUBERNETES_VERSION/$b" "$b"
      done ;;
    etcd) build_etcd; link "$builds/etcd-$ETCD_VERSION/etcd" etcd ;;
    kwok) go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" kwok; link "$builds/kwok-$KWOK_VERSION/kwok" kwok ;;
    # Helm reports (and stamps into releases) the version set at link time.
    helm4) build_helm4; link "$builds/helm4-$HELM4_VERSION/helm" helm ;;
    helm3) go_install helm3 helm.sh/helm/v3/cmd/helm "$HELM3_VERSION" helm \
             "-X helm.sh/helm/v3/internal/version.version=$HELM3_VERSION"; link "$builds/helm3-$HELM3_VERSION/helm" helm3 ;;
    cosign) go_install cosign github.com/sigstore/cosign/v3/cmd/cosign "$COSIGN_VERSION" cosign \
              "-X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION"; link "$builds/cosign-$COSIGN_VERSION/cosign" cosign ;;
    # The test oracle for kustomize.wasm: the same kustomize API version (see versions.env).
    kustomize) go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION" kustomize
               link "$builds/kustomize-$KUSTOMIZE_VERSION/kustomize" kustomize ;;
    kustomize-wasm) build_kustomize_wasm; link "$(kustomize_wasm_dir)/kustomize.wasm" kustomize.wasm ;;
    wasm-plugins) build_wasm_plugins; link "$(wasm_plugins_dir)" wasm-plugins ;;
    # Opt-in (bench --flux): Flux's helm-controller and source-controller, run out of cluster.
    flux)
      # helm-controller v1.6.3 replaces Helm with Flux's fork v4.2.4-flux.1, which the module
      # proxy refuses (403); upstream v4.2.4 instead, the Helm that v1.6.4 moved back to (its
      # only other code change validates kubeconfig Secrets, which the bench does not use).
      go_main_of_module helm-controller github.com/fluxcd/helm-controller "$FLUX_HELM_CONTROLLER_VERSION" \
        helm.sh/helm/v4=helm.sh/helm/v4@v4.2.4
      go_main_of_module source-controller github.com/fluxcd/source-controller "$FLUX_SOURCE_CONTROLLER_VERSION"
      link "$builds/helm-controller-$FLUX_HELM_CONTROLLER_VERSION/helm-controller" helm-controller
      link "$builds/source-controller-$FLUX_SOURCE_CONTROLLER_VERSION/source-controller" source-controller ;;
    *) log "unknown component $component"; exit 2 ;;
  esac
done
log "tools ready in $tools after $(( $(date +%s) - start ))s"
