#!/usr/bin/env bash
# run_all.sh DGEMMA TEST_BIN - every test tier (C unit/parity/error tests, then the CLI tests) and
# one closing "N passed, N failed" line for the whole run. Exit status 1 if anything failed.
set -u
BIN=${1:-./dgemma}
TEST=${2:-./build/dgemma_test}
total_p=0 total_f=0 rc=0
steps=("$TEST" "bash tests/test_cli.sh $BIN" "bash tests/test_tokenizer_cli.sh $BIN" "bash tests/test_run_cli.sh $BIN"
       "bash tests/test_quantize_cli.sh $BIN" "bash tests/test_server.sh $BIN")
# the aarch64 (NEON) kernels under qemu, where the cross toolchain is installed (tools/install-deps.sh)
if [ -z "${DG_SKIP_ARM:-}" ] && command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
    steps+=("make --no-print-directory -s test-arm")
else
    echo "run_all: aarch64 kernel tests skipped (no aarch64-linux-gnu-gcc / qemu-aarch64, or DG_SKIP_ARM set)"
fi
for step in "${steps[@]}"; do
    log=$(mktemp)
    TEST_BIN=$TEST $step 2>&1 | tee "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    rm -f "$log"
    if [ -z "$line" ]; then echo "run_all: '$step' printed no summary (crashed?)"; rc=1; total_f=$((total_f + 1)); continue; fi
    total_p=$((total_p + $(echo "$line" | cut -d' ' -f1)))
    total_f=$((total_f + $(echo "$line" | cut -d' ' -f3)))
done
[ "$total_f" -eq 0 ] || rc=1
echo "total: $total_p passed, $total_f failed"
exit $rc
