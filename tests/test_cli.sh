#!/usr/bin/env bash
# test_cli.sh - the dgemma command line: happy paths against the reference fixtures, and error paths
# (missing model, bad flags, bad id files) with a non-zero exit and a message on stderr.
# Usage: tests/test_cli.sh ./dgemma   (run from the repository root; prints "N passed, N failed")
set -u
BIN=${1:-./dgemma}
TEST=${TEST_BIN:-./build/dgemma_test}
FIX=${DG_FIXTURES:-tests/fixtures}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "[ OK   ] cli/$1"; }
bad() { fail=$((fail + 1)); echo "[ FAIL ] cli/$1: $2"; }

# expect_fail NAME PATTERN CMD...: non-zero exit, PATTERN on stderr, nothing on stdout
expect_fail() {
    local name=$1 pat=$2; shift 2
    if "$@" >"$TMP/out" 2>"$TMP/err"; then bad "$name" "exit 0"; return; fi
    if ! grep -q -- "$pat" "$TMP/err"; then bad "$name" "stderr lacks '$pat': $(cat "$TMP/err")"; return; fi
    if [ -s "$TMP/out" ]; then bad "$name" "stdout not empty"; return; fi
    ok "$name"
}

for dt in f32 bf16; do
    M=$FIX/tiny-a/$dt C=$FIX/tiny-a/cli-$dt
    # a prompt, a committed canvas, then a fresh canvas (the reference's short.dec2)
    if "$BIN" forward --kernels ref --model "$M" --prompt-ids "$C/prompt.txt" --commit-ids "$C/commit.txt" \
        --canvas-ids "$C/canvas2.txt" --out "$TMP/dec2.npy" >"$TMP/out" 2>"$TMP/err"; then
        want="argmax: $(cat "$C/argmax-dec2.txt")"
        if [ "$(cat "$TMP/out")" = "$want" ]; then ok "forward-$dt-commit-argmax"; else bad "forward-$dt-commit-argmax" "got '$(cat "$TMP/out")' want '$want'"; fi
        tol=1e-4; [ $dt = bf16 ] && tol=1e-6
        if "$TEST" --compare-npy "$TMP/dec2.npy" "$FIX/tiny-a/ref-$dt.safetensors" short.dec2.logits $tol; then ok "forward-$dt-commit-logits"; else bad "forward-$dt-commit-logits" "logits differ"; fi
    else
        bad "forward-$dt-commit" "$(cat "$TMP/err")"
    fi
done
# self-conditioning logits from a .npy (the reference's short.dec1)
C=$FIX/tiny-a/cli-f32
if "$BIN" forward --kernels ref -m "$FIX/tiny-a/f32" --prompt-ids "$C/prompt.txt" --canvas-ids "$C/canvas1.txt" \
    --sc-logits "$C/sc-dec0.npy" --out "$TMP/dec1.npy" --n-batch 2 >"$TMP/out" 2>"$TMP/err" &&
   "$TEST" --compare-npy "$TMP/dec1.npy" "$FIX/tiny-a/ref-f32.safetensors" short.dec1.logits 1e-4 >/dev/null; then
    ok forward-sc-logits
else
    bad forward-sc-logits "$(cat "$TMP/err")"
fi
# generate: the reference trajectory's first case (tiny-a f32, 3 canvases, 6 steps, seed 11, no EOS)
if "$BIN" generate --kernels ref -m "$FIX/tiny-a/f32" --prompt-ids "$C/gen-prompt.txt" -n 40 --steps 6 --seed 11 --eos '' \
    >"$TMP/out" 2>"$TMP/err"; then
    if [ "$(cat "$TMP/out")" = "$(cat "$C/gen-expected.txt")" ] && grep -q "3 canvases, 18 steps" "$TMP/err"; then ok generate-matches-reference
    else bad generate-matches-reference "got '$(cat "$TMP/out")' / $(cat "$TMP/err")"; fi
else
    bad generate-matches-reference "$(cat "$TMP/err")"
fi
if cat "$C/gen-prompt.txt" | "$BIN" generate --kernels ref -m "$FIX/tiny-a/f32" --prompt-ids - -n 40 --steps 6 --seed 11 --eos '' -v >"$TMP/out" 2>"$TMP/err" &&
   [ "$(cat "$TMP/out")" = "$(cat "$C/gen-expected.txt")" ] && [ "$(grep -c '^canvas . step' "$TMP/err")" -eq 18 ]; then ok generate-stdin-verbose
else bad generate-stdin-verbose "$(tail -2 "$TMP/err")"; fi
G="$BIN generate -m $FIX/tiny-a/f32 --prompt-ids $C/gen-prompt.txt"
expect_fail gen-steps-0 "--steps expects" $G --steps 0
expect_fail gen-bound-0 "--entropy-bound expects" $G --entropy-bound 0
expect_fail gen-tmin "--t-min expects" $G --t-min -1
expect_fail gen-stability "--stability expects" $G --stability -2
expect_fail gen-tmax-tmin "t_max must be" $G --t-min 0.8 --t-max 0.5
expect_fail gen-bad-kernels "--kernels expects" $G --kernels fastest
expect_fail gen-bad-threads "--threads expects" $G --threads 0
expect_fail gen-eos "--eos expects" $G --eos 1,x
expect_fail gen-eos-vocab "outside the vocabulary" $G --eos 5000
expect_fail gen-max-tokens "--max-tokens expects" $G --max-tokens 0
expect_fail gen-no-prompt "--prompt-ids is required" "$BIN" generate -m "$FIX/tiny-a/f32"
expect_fail gen-no-model "--model is required" "$BIN" generate --prompt-ids "$C/gen-prompt.txt"
expect_fail gen-unknown "unknown option" $G --temperature 1

# help and inspect
if "$BIN" --help | grep -q forward && "$BIN" forward --help | grep -q -- --sc-logits; then ok help; else bad help "help text"; fi
if "$BIN" inspect "$FIX/tiny-c/f32" >"$TMP/out" 2>&1 && grep -q "layers         6 (1 full attention)" "$TMP/out" &&
   grep -q "model.decoder.layers.5.self_attn.q_proj.weight" "$TMP/out"; then ok inspect; else bad inspect "$(head -5 "$TMP/out")"; fi

# error paths
expect_fail no-args "usage" "$BIN"
expect_fail unknown-command "unknown command" "$BIN" frobnicate
expect_fail missing-model "config.json" "$BIN" forward -m "$TMP/none" --prompt-ids "$C/prompt.txt" --canvas-ids "$C/canvas2.txt" --out "$TMP/x.npy"
expect_fail missing-flags "required" "$BIN" forward -m "$FIX/tiny-a/f32"
expect_fail unknown-flag "unknown option" "$BIN" forward --bogus 1
expect_fail bad-n-batch "expects an integer" "$BIN" forward -m "$FIX/tiny-a/f32" --n-batch zero --prompt-ids "$C/prompt.txt" --canvas-ids "$C/canvas2.txt" --out "$TMP/x.npy"
expect_fail bad-act "--act expects" "$BIN" forward --act fp8
echo "1 2 x" >"$TMP/bad.txt"
expect_fail bad-ids-file "unexpected character" "$BIN" forward -m "$FIX/tiny-a/f32" --prompt-ids "$TMP/bad.txt" --canvas-ids "$C/canvas2.txt" --out "$TMP/x.npy"
echo "1 2 99999" >"$TMP/big.txt"
expect_fail id-out-of-range "outside the vocabulary" "$BIN" forward -m "$FIX/tiny-a/f32" --prompt-ids "$TMP/big.txt" --canvas-ids "$C/canvas2.txt" --out "$TMP/x.npy"
expect_fail sc-wrong-shape "shape must be" "$BIN" forward -m "$FIX/tiny-a/f32" --prompt-ids "$C/prompt.txt" --canvas-ids "$C/prompt.txt" --sc-logits "$C/sc-dec0.npy" --out "$TMP/x.npy"
expect_fail inspect-missing "config.json" "$BIN" inspect "$TMP/none"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
