#!/usr/bin/env bash
# make tools (run by make test): installs what the tests use and a fresh machine of this kind
# lacks; quick when everything is there.
set -euo pipefail

# kubectl is on the image: it talks to the simulated cluster and renders deploy/.
command -v kubectl >/dev/null || { echo "kubectl is missing: the simulated-cluster tests need it"; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

# From Debian's packages: tar (GNU, run by the simulated exec), busybox (the simulated
# BusyBox entry pods), openssl and python3 (the Dex interoperability test, the ZIP64 check),
# unzip, curl and sha256sum (make demo, the Range and manifest tests), tshark and capinfos
# (reading the merged pcapng with Wireshark's code), script (the progress-bar test), tcpdump
# (the reference for filtered merges).
missing=()
for pair in tar:tar busybox:busybox openssl:openssl python3:python3 unzip:unzip curl:curl \
            sha256sum:coreutils tshark:tshark capinfos:wireshark-common script:bsdutils \
            tcpdump:tcpdump; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
# libpcap-dev: the build links libpcap statically (filters are compiled by it).
bash scripts/build-deps.sh
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# From PyPI: schemathesis (holds /openapi.json true), prometheus-client (parses /metrics),
# kubernetes-validate (checks the deploy/ manifests against Kubernetes 1.33's schemas).
if ! command -v schemathesis >/dev/null || ! command -v kubernetes-validate >/dev/null \
   || ! python3 -c 'import prometheus_client' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    schemathesis==4.32.5 prometheus-client==0.26.0 kubernetes-validate==1.37.0
  # pyenv (the image's Python) finds new console scripts after a rehash.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi
echo "test tools: ok"
