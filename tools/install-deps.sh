#!/usr/bin/env bash
# Installs the system packages dgemma needs to build (Debian/Ubuntu, run as root).
# Idempotent: does nothing when everything is already present.
set -eu
need=()
command -v cc   >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[ -f /usr/include/jansson.h ] || need+=(libjansson-dev)
command -v xz   >/dev/null 2>&1 || need+=(xz-utils)   # the tokenizer test decompresses ../shared/data
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "install-deps: installing ${need[*]}" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
