#!/usr/bin/env bash
# bench/run.sh - the committed benchmark set, one run (see bench/README.md). Writes CSV rows to
# bench/results/<date>-<host>.csv. Needs the models named below (none is committed):
#   MID=/tmp/dg-mid          the mid model (bench/compare_transformers.py builds it)
#   Q4=/tmp/dg-26b-q4km.gguf full-size 26B-A4B shapes at Q4_K_M:  dgemma synth Q4 --type Q4_K_M
#   Q8=/tmp/dg-26b-q8_0.gguf full-size at Q8_0 (26.8 GB: more than a 24 GiB machine's memory)
#   L6Q4, L6Q8               the 26B-A4B shapes with 6 layers (5 sliding + 1 full), Q4_K_M and Q8_0:
#                            dgemma synth L6Q8 --type Q8_0 --layers 6 (6.0 GB; Q4_K_M 3.8 GB)
# Missing models are skipped with a message. STEPS: steps per measured canvas (26B: BIG_STEPS).
set -u
cd "$(dirname "$0")/.."
MID=${MID:-/tmp/dg-mid} Q4=${Q4:-/tmp/dg-26b-q4km.gguf} Q8=${Q8:-/tmp/dg-26b-q8_0.gguf}
L6Q4=${L6Q4:-/tmp/l6-q4.gguf} L6Q8=${L6Q8:-/tmp/l6-q8.gguf}
OUT=${OUT:-bench/results/$(date +%Y-%m-%d)-$(hostname -s).csv}
STEPS=${STEPS:-4} BIG_STEPS=${BIG_STEPS:-3}
mkdir -p "$(dirname "$OUT")"
run() { echo "bench: $*" >&2; ./dgemma bench "$@" --csv "$OUT" >/dev/null || echo "bench: FAILED: $*" >&2; }
have() { [ -e "$1" ] || { echo "bench: $1 missing: skipped" >&2; return 1; }; }
if have "$MID/config.json"; then
    for t in 1 2; do run -m "$MID" -p 100 -s "$STEPS" -t "$t" --label "mid bf16 p100 t$t"; done
    for p in 1000 8000; do run -m "$MID" -p "$p" -s "$STEPS" --label "mid bf16 p$p"; done
    run -m "$MID" -p 100 -s "$STEPS" --kernels avx512 --label "mid bf16 p100 avx512"
fi
for m in "$L6Q4" "$L6Q8"; do
    if have "$m"; then
        b=$(basename "$m" .gguf)
        for t in 1 2; do run -m "$m" -p 100 -s "$STEPS" -t "$t" --label "26B-shape 6 layers $b p100 t$t"; done
    fi
done
if have "$Q4"; then
    for p in 100 1000 8000; do run -m "$Q4" -p "$p" -s "$BIG_STEPS" --label "26B Q4_K_M p$p"; done
    run -m "$Q4" -p 100 -s "$BIG_STEPS" -t 1 --label "26B Q4_K_M p100 t1"
fi
if have "$Q8"; then run -m "$Q8" -p 100 -s "$BIG_STEPS" --label "26B Q8_0 p100"; fi
echo "bench: rows in $OUT" >&2
