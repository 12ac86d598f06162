#!/usr/bin/env bash
# What building the service needs beyond Rust: Debian's libpcap-dev (libpcap.a, linked
# statically by adapters/libpcap to compile packet filters). Run by make tools and make demo;
# quick when it is there.
set -euo pipefail
if ! dpkg -s libpcap-dev >/dev/null 2>&1 && ! ls /usr/lib/*/libpcap.a /usr/lib/libpcap.a >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq libpcap-dev
fi
