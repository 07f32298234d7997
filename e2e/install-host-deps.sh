#!/usr/bin/env bash
# Debian packages the tests and the demo need: the OCI registry (Distribution), htpasswd for
# its basic-auth instance. Installs only what is missing; needs root (CI and dev machines are).
set -euo pipefail
need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v python3.11 >/dev/null 2>&1 || need+=(python3.11)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the status page test
command -v lua5.4 >/dev/null 2>&1 || need+=(lua5.4)  # deploy/argocd/health.lua's test
python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3.11-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "[host-deps] installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
