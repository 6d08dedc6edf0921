#!/usr/bin/env bash
# test_quantize_cli.sh - `dgemma quantize` and `dgemma synth` from the command line: the dry-run counts
# for the real 26B-A4B shapes (the unsloth Q4_K_M file's 692 tensors), a conversion that loads and
# generates, the progress lines, a full disk (file-size limit), and bad arguments (exit status 2 or 1,
# a message on stderr, no output file left).
# Usage: tests/test_quantize_cli.sh ./dgemma   (run from the repository root; prints "N passed, N failed")
set -u
BIN=${1:-./dgemma}
FIX=${DG_FIXTURES:-tests/fixtures}
PREFIX=quantcli
. "$(dirname "$0")/cli_lib.sh"

# the unsloth Q4_K_M composition, from a config.json alone
"$BIN" quantize "$FIX/quant/26b-a4b/config.json" --type Q4_K_M --dry-run >"$TMP/out" 2>"$TMP/err"
want=$'F32 423\nQ4_K 194\nQ5_0 33\nQ6_K 14\nQ8_0 28\ntotal 692'
got=$(awk '$1 ~ /^(F32|Q4_K|Q5_0|Q6_K|Q8_0|total)$/ { print $1, $2 }' "$TMP/out" | sort)
if [ "$got" = "$(echo "$want" | sort)" ] && grep -q "size label 128x2.6B" "$TMP/out"; then ok dry-run-26b-q4_k_m
else bad dry-run-26b-q4_k_m "$(cat "$TMP/out" "$TMP/err")"; fi
# dgemma synth plans the same model by default
"$BIN" synth --dry-run --type Q4_K_M >"$TMP/out2" 2>/dev/null
if diff -q "$TMP/out" "$TMP/out2" >/dev/null; then ok synth-dry-run-same; else bad synth-dry-run-same "$(diff "$TMP/out" "$TMP/out2")"; fi
# --list: one line per tensor
n=$("$BIN" quantize "$FIX/quant/26b-a4b/config.json" --type Q4_K_M --dry-run --list 2>/dev/null | grep -c '^blk\.\|^token_embd\|^rope_freqs\|^output_norm\|^self_cond')
if [ "$n" = 692 ]; then ok dry-run-list; else bad dry-run-list "$n lines"; fi

# a conversion: plain progress lines on a pipe, the summary on stdout, a file that loads and generates
if "$BIN" quantize "$FIX/tiny-a/f32" "$TMP/a.gguf" --type Q4_K_M -t 2 >"$TMP/out" 2>"$TMP/err" &&
   grep -q '^\[  97/  97\] ' "$TMP/err" && grep -q 'MB/s' "$TMP/err" && grep -q '^total  *97 ' "$TMP/out" &&
   [ ! -e "$TMP/a.gguf.tmp-"* ] 2>/dev/null; then ok quantize-tiny-a
else bad quantize-tiny-a "$(cat "$TMP/out" "$TMP/err")"; fi
if "$BIN" generate --model "$TMP/a.gguf" --prompt-ids "$FIX/tiny-a/cli-f32/prompt.txt" -n 8 --steps 2 --seed 1 >"$TMP/out" 2>"$TMP/err" &&
   [ "$(wc -w <"$TMP/out")" -ge 1 ]; then ok quantized-generates
else bad quantized-generates "$(cat "$TMP/err")"; fi
# synth: a tiny GGUF and a Hugging Face directory
if "$BIN" synth "$TMP/s.gguf" --shape tiny --type Q6_K --seed 3 >"$TMP/out" 2>"$TMP/err" && "$BIN" inspect "$TMP/s.gguf" --no-tensors >/dev/null 2>&1 &&
   "$BIN" tokenize -m "$TMP/s.gguf" -p 'hello world' --ids-only >/dev/null 2>&1; then ok synth-gguf
else bad synth-gguf "$(cat "$TMP/err")"; fi
if "$BIN" synth "$TMP/hf" --shape tiny --layers 3 --experts 2 >/dev/null 2>"$TMP/err" && [ -f "$TMP/hf/model.safetensors" ] &&
   "$BIN" inspect "$TMP/hf" --no-tensors 2>/dev/null | grep -q 'layers         3 (1 full attention)'; then ok synth-hf-dir
else bad synth-hf-dir "$(cat "$TMP/err")"; fi

# a sharded directory (transformers' naming and index) loads and converts
if "$BIN" synth "$TMP/hfs" --shape tiny --max-shard-size 1MB >/dev/null 2>"$TMP/err" && [ -f "$TMP/hfs/model.safetensors.index.json" ] &&
   [ "$(ls "$TMP/hfs"/model-0000*-of-00007.safetensors | wc -l)" = 7 ] && "$BIN" inspect "$TMP/hfs" --no-tensors >/dev/null 2>&1 &&
   "$BIN" quantize "$TMP/hfs" "$TMP/hfs.gguf" --type Q6_K --synthetic-vocab >/dev/null 2>&1; then ok synth-hf-sharded
else bad synth-hf-sharded "$(cat "$TMP/err"; ls "$TMP/hfs")"; fi
expect_fail synth-shard-size "expects a size" "$BIN" synth "$TMP/hf3" --shape tiny --max-shard-size 5XB

# a full disk: a file-size limit makes the write fail; the message says so and nothing is left behind
mkdir -p "$TMP/full"
if (ulimit -f 200; "$BIN" quantize "$FIX/tiny-a/f32" "$TMP/full/x.gguf" --type Q8_0 >/dev/null 2>"$TMP/err"); then bad disk-full "exit 0"
elif grep -q "write failed: File too large" "$TMP/err" && [ -z "$(ls -A "$TMP/full")" ]; then ok disk-full
else bad disk-full "$(cat "$TMP/err"; ls "$TMP/full")"; fi

# bad arguments and inputs
expect_fail no-type "type is required" "$BIN" quantize "$FIX/tiny-a/f32" "$TMP/x.gguf"
expect_fail bad-type "unknown type 'Q9'" "$BIN" quantize "$FIX/tiny-a/f32" "$TMP/x.gguf" --type Q9
expect_fail no-output "give IN_HF_DIR and OUT.gguf" "$BIN" quantize "$FIX/tiny-a/f32" --type Q8_0
expect_fail not-a-checkpoint "no config.json" "$BIN" quantize "$FIX/tokenizer" "$TMP/x.gguf" --type Q8_0
expect_fail config-only "can only be planned" "$BIN" quantize "$FIX/quant/26b-a4b/config.json" "$TMP/x.gguf" --type Q8_0
expect_fail no-tokenizer "synthetic-vocab" "$BIN" quantize "$FIX/tiny-b/f32" "$TMP/x.gguf" --type Q8_0
expect_fail bad-threads "expects an integer" "$BIN" quantize "$FIX/tiny-a/f32" "$TMP/x.gguf" --type Q8_0 -t 0
expect_fail unknown-option "unknown option '--fast'" "$BIN" quantize "$FIX/tiny-a/f32" "$TMP/x.gguf" --type Q8_0 --fast
expect_fail synth-shape "unknown shape 'big'" "$BIN" synth "$TMP/x.gguf" --shape big --type Q8_0
expect_fail synth-hf-quant "BF16, F16 or F32" "$BIN" synth "$TMP/hf2" --shape tiny --type Q4_K_M
expect_fail synth-exists "already exists" "$BIN" synth "$TMP/hf" --shape tiny
expect_fail synth-layers "expects an integer" "$BIN" synth "$TMP/x.gguf" --layers -1
if [ -e "$TMP/x.gguf" ] || ls "$TMP"/x.gguf.tmp-* >/dev/null 2>&1; then bad no-leftovers "$(ls "$TMP")"; else ok no-leftovers; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
