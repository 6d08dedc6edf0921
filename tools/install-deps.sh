#!/usr/bin/env bash
# Installs the system packages dgemma needs to build (Debian/Ubuntu, run as root).
# Idempotent: does nothing when everything is already present.
#   --server-tests   also the browser of the web-page test (chromium, chromedriver); CI's .ci/run
#                    passes it. The test's Python packages: pip install -r tests/requirements-server.txt
set -eu
need=()
command -v cc   >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[ -f /usr/include/jansson.h ] || need+=(libjansson-dev)
[ -f /usr/include/editline/readline.h ] || need+=(libedit-dev)   # line editing in `dgemma chat` (BSD licence)
[ -f /usr/include/microhttpd.h ] || need+=(libmicrohttpd-dev)     # the HTTP server of `dgemma serve`
command -v curl >/dev/null 2>&1 || need+=(curl)                    # the server tests
if [ "${1:-}" = --server-tests ]; then
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
command -v xz   >/dev/null 2>&1 || need+=(xz-utils)   # the tokenizer test decompresses ../shared/data
# the aarch64 kernel tests: a cross compiler and user-mode qemu (x86-64 hosts)
if [ "$(uname -m)" = x86_64 ]; then
    command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
    command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "install-deps: installing ${need[*]}" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
