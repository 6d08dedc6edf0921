#!/usr/bin/env bash
# bench/run.sh - the committed benchmark set, one run (see bench/README.md). Writes CSV rows to
# bench/results/<date>-<host>.csv. Needs the models named below (none is committed):
#   MID=/tmp/dg-mid          the mid model (bench/compare_transformers.py builds it)
#   Q4=/tmp/dg-26b-q4km.gguf full-size 26B-A4B shapes at Q4_K_M (dgemma synth OUT --type Q4_K_M)
#   Q8=/tmp/dg-26b-q8_0.gguf full-size at Q8_0 (26.8 GB: larger than a 24 GiB machine's memory)
# Missing models are skipped with a message.
set -u
cd "$(dirname "$0")/.."
MID=${MID:-/tmp/dg-mid} Q4=${Q4:-/tmp/dg-26b-q4km.gguf} Q8=${Q8:-/tmp/dg-26b-q8_0.gguf}
OUT=${OUT:-bench/results/$(date +%Y-%m-%d)-$(hostname -s).csv}
STEPS=${STEPS:-4}
mkdir -p "$(dirname "$OUT")"
run() { echo "bench: $*" >&2; ./dgemma bench "$@" --csv "$OUT" >/dev/null || echo "bench: FAILED: $*" >&2; }
if [ -e "$MID/config.json" ]; then
    for t in 1 2; do run -m "$MID" -p 100 -s "$STEPS" -t "$t" --label "mid bf16 t$t"; done
    run -m "$MID" -p 100 -s "$STEPS" --kernels avx512 --label "mid bf16 avx512"
else echo "bench: $MID missing: mid model skipped" >&2; fi
if [ -e "$Q4" ]; then
    for p in 100 1000 8000; do run -m "$Q4" -p "$p" -s "$STEPS" --label "26B Q4_K_M p$p"; done
    run -m "$Q4" -p 100 -s "$STEPS" -t 1 --label "26B Q4_K_M t1"
else echo "bench: $Q4 missing: 26B Q4_K_M skipped" >&2; fi
if [ -e "$Q8" ]; then run -m "$Q8" -p 100 -s 2 --label "26B Q8_0"; else echo "bench: $Q8 missing: 26B Q8_0 skipped" >&2; fi
echo "bench: rows in $OUT" >&2
