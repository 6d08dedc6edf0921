#!/usr/bin/env bash
# test_run_cli.sh - `dgemma run` and `dgemma chat`: their output against transformers' generate() on a
# conversation rendered by apply_chat_template with the same template (tiny-a/cli-f32/run-expected.txt,
# chat-expected.txt from tools/reference/make_trajectories.py, byte for byte), prompts from stdin,
# chat commands through a pipe, KV cache reuse, Ctrl-C (SIGINT) cancelling, the canvas view without a
# terminal, --help of every subcommand, and the error paths (exit 2 for usage errors, 1 at run time,
# a message on stderr, nothing on stdout).
# Usage: tests/test_run_cli.sh ./dgemma   (run from the repository root; prints "N passed, N failed")
set -u
BIN=${1:-./dgemma}
FIX=${DG_FIXTURES:-tests/fixtures}
M=$FIX/tiny-a/f32
C=$FIX/tiny-a/cli-f32
PREFIX=runcli
. "$(dirname "$0")/cli_lib.sh"

SYS="You are a helpful assistant."
Q1="Why is the sky blue?"
Q2="And why are sunsets red?"
# the reference case: tiny-a f32, exact kernels, seed 21, 32 tokens, 8 steps (make_trajectories.py CHAT)
REF=(--kernels ref -m "$M" --system "$SYS" -n 32 --steps 8 --seed 21)

# ===== the answer, byte for byte =====
if "$BIN" run "${REF[@]}" -p "$Q1" >"$TMP/out" 2>"$TMP/err"; then
    if cmp -s "$TMP/out" "$C/run-expected.txt"; then ok run-matches-reference
    else bad run-matches-reference "stdout differs from run-expected.txt: $(cmp "$TMP/out" "$C/run-expected.txt" 2>&1)"; fi
    if grep -q "54 prompt tokens, 32 emitted, 2 canvases (steps 8 8)" "$TMP/err" && grep -q "finish length" "$TMP/err"; then ok run-stats
    else bad run-stats "$(cat "$TMP/err")"; fi
else
    bad run-matches-reference "$(cat "$TMP/err")"
fi
# the prompt from stdin (one final newline dropped), with -p - and without -p
printf '%s\n' "$Q1" | "$BIN" run "${REF[@]}" -q >"$TMP/out" 2>"$TMP/err"
if cmp -s "$TMP/out" "$C/run-expected.txt" && [ ! -s "$TMP/err" ]; then ok run-stdin-quiet; else bad run-stdin-quiet "$(cat "$TMP/err")"; fi
printf '%s' "$Q1" | "$BIN" run "${REF[@]}" -q -p - >"$TMP/out" 2>"$TMP/err"
if cmp -s "$TMP/out" "$C/run-expected.txt"; then ok run-stdin-dash; else bad run-stdin-dash "$(cat "$TMP/err")"; fi
# two turns through a pipe: the second prompt re-renders the first answer through the template
printf '%s\n%s\n' "$Q1" "$Q2" | "$BIN" chat "${REF[@]}" >"$TMP/out" 2>"$TMP/err"
if cmp -s "$TMP/out" "$C/chat-expected.txt" && [ "$(grep -c '^chat: ' "$TMP/err")" -eq 2 ]; then ok chat-matches-reference
else bad chat-matches-reference "$(cmp "$TMP/out" "$C/chat-expected.txt" 2>&1) / $(cat "$TMP/err")"; fi

# ===== run: modes =====
# the canvas view without a terminal: one line per step on stderr, the answer unchanged
if "$BIN" run "${REF[@]}" -p "$Q1" --show-canvas >"$TMP/out" 2>"$TMP/err" && cmp -s "$TMP/out" "$C/run-expected.txt" &&
   [ "$(grep -c '^canvas [12]  step [1-8]/8  accepted .* draft: ' "$TMP/err")" -eq 16 ]; then ok run-show-canvas-pipe
else bad run-show-canvas-pipe "$(head -3 "$TMP/err")"; fi
# thinking on (the template's <|think|>), thoughts shown: a different prompt, still an answer
if "$BIN" run -m "$M" -p "$Q1" -n 16 --steps 4 --think --show-thinking >"$TMP/out" 2>"$TMP/err" && [ -s "$TMP/out" ] &&
   grep -q "^run: [0-9]* prompt tokens" "$TMP/err" && ! cmp -s "$TMP/out" "$C/run-expected.txt"; then ok run-think
else bad run-think "$(cat "$TMP/err")"; fi
# raw: no template
"$BIN" run -m "$M" -p "$Q1" --raw -n 16 --steps 4 -q >"$TMP/out" 2>"$TMP/err"
if [ $? -eq 0 ] && [ -s "$TMP/out" ]; then ok run-raw; else bad run-raw "$(cat "$TMP/err")"; fi
if "$BIN" run -m "$FIX/tiny-a/bf16" -p "$Q1" -n 16 --steps 4 -q --threads 1 --sc-top-k 8 >"$TMP/out" 2>"$TMP/err" && [ -s "$TMP/out" ]; then
    ok run-bf16-options
else bad run-bf16-options "$(cat "$TMP/err")"; fi
# a GGUF file: its tokenizer from the metadata, the built-in template
if "$BIN" run -m "$FIX/gguf/tiny-a-q8_0.gguf" -p "$Q1" -n 16 --steps 4 >"$TMP/out" 2>"$TMP/err" && [ -s "$TMP/out" ] &&
   grep -q "^run: [0-9]* prompt tokens, 16 emitted" "$TMP/err"; then ok run-gguf
else bad run-gguf "$(cat "$TMP/err")"; fi
# the model's own template is used when the directory has one
mkdir -p "$TMP/tpl"
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do ln -s "$(cd "$M" && pwd)/$f" "$TMP/tpl/$f"; done
printf '{{ bos_token }}Q: {{ messages[-1]["content"] }}\nA:' >"$TMP/tpl/chat_template.jinja"
want=$("$BIN" tokenize -m "$M" -p "<bos>Q: $Q1"$'\nA:' --ids-only 2>/dev/null | wc -w)
if "$BIN" run -m "$TMP/tpl" -p "$Q1" -n 16 --steps 4 >"$TMP/out" 2>"$TMP/err" && grep -q "^run: $want prompt tokens" "$TMP/err"; then ok run-model-template
else bad run-model-template "$(cat "$TMP/err")"; fi

# ===== chat: commands, reset, cache =====
printf '/help\n/think on\n/think off\n/system Be brief.\n/system\n/bogus\n\n%s\n/reset\n%s\n/quit\nnot read\n' "$Q1" "$Q1" |
    "$BIN" chat "${REF[@]}" -n 16 >"$TMP/out" 2>"$TMP/err"
rc=$?
half=$(($(wc -c <"$TMP/out") / 2))
if [ $rc -eq 0 ] && grep -q "commands: /quit" "$TMP/err" && grep -q "(thinking on)" "$TMP/err" && grep -q "(thinking off)" "$TMP/err" &&
   grep -q "(system message set)" "$TMP/err" && grep -q "(system message cleared)" "$TMP/err" && grep -q "unknown command /bogus" "$TMP/err" &&
   grep -q "(conversation cleared)" "$TMP/err" && [ "$(grep -c '^chat: ' "$TMP/err")" -eq 2 ] &&
   [ "$(head -c $half "$TMP/out")" = "$(tail -c $half "$TMP/out")" ]; then
    ok chat-commands-reset   # after /reset the same question gets the same answer
else bad chat-commands-reset "rc $rc: $(cat "$TMP/err")"; fi
# with thinking on the generation prompt ends at "<|turn>model\n": a one-canvas answer leaves exactly the
# prompt in the cache, which the next prompt extends; the answers equal re-encoding everything
printf '%s\n%s\n' "$Q1" "$Q2" | "$BIN" chat --kernels ref -m "$M" --think -n 16 --steps 4 --seed 3 >"$TMP/out" 2>"$TMP/err"
printf '%s\n%s\n' "$Q1" "$Q2" | "$BIN" chat --kernels ref -m "$M" --think -n 16 --steps 4 --seed 3 --reencode >"$TMP/out2" 2>"$TMP/err2"
if grep -q "prompt tokens ([0-9]* cached)" "$TMP/err" && ! grep -q cached "$TMP/err2" && cmp -s "$TMP/out" "$TMP/out2"; then ok chat-cache-reuse
else bad chat-cache-reuse "$(cat "$TMP/err")"; fi
# a conversation that does not fit: the turn is dropped, the chat goes on
printf '%s\n/quit\n' "$Q1" | "$BIN" chat -m "$M" -n 32 --n-ctx 40 >"$TMP/out" 2>"$TMP/err"
if [ $? -eq 0 ] && grep -q "exceed n_ctx" "$TMP/err" && grep -q "the message was not added" "$TMP/err"; then ok chat-context-full
else bad chat-context-full "$(cat "$TMP/err")"; fi
# end of input without /quit
if "$BIN" chat -m "$M" </dev/null >"$TMP/out" 2>"$TMP/err" && [ ! -s "$TMP/out" ]; then ok chat-eof; else bad chat-eof "$(cat "$TMP/err")"; fi

# ===== Ctrl-C: SIGINT cancels at the next denoising step (a generation that would take minutes) =====
LONG=(-m "$M" -n 64 --steps 100000 --stability 100000)
timeout --preserve-status -s INT 2 "$BIN" run "${LONG[@]}" -p "$Q1" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -eq 130 ] && grep -q "finish cancelled" "$TMP/err" && grep -q "dgemma run: cancelled" "$TMP/err"; then ok run-sigint
else bad run-sigint "rc $rc: $(cat "$TMP/err")"; fi
{ printf '%s\n' "$Q1"; sleep 4; printf '/quit\n'; } | timeout --preserve-status -s INT 2 "$BIN" chat "${LONG[@]}" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -eq 0 ] && grep -q "(cancelled)" "$TMP/err"; then ok chat-sigint-continues; else bad chat-sigint-continues "rc $rc: $(cat "$TMP/err")"; fi

# ===== bench: one CSV row under its header, the peaks sampled after every step and once more =====
if "$BIN" bench -m "$M" -p 8 -s 2 -t 1 --csv "$TMP/bench.csv" >"$TMP/out" 2>"$TMP/err"; then
    hn=$(head -1 "$TMP/bench.csv" | tr ',' '\n' | wc -l); rn=$(sed -n 2p "$TMP/bench.csv" | tr ',' '\n' | wc -l)
    # a column of the row by its name in the header
    col() { awk -F, -v k="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == k) c = i } NR == 2 && c { print $c }' "$TMP/bench.csv"; }
    ns=$(col peak_samples)
    # the memory read bandwidth, measured on every machine (> 0); the first step's time and the
    # self-conditioned steps' (steps 2..S), and the encoder's expert products, all > 0
    bw=$(awk -v a="$(col mem_read_gbs)" -v b="$(col ms_first_step)" -v c="$(col ms_per_step)" -v d="$(col enc_experts_ms)" \
         'BEGIN { print (a > 0 && b > 0 && c > 0 && d > 0) }')
    if [ "$(wc -l <"$TMP/bench.csv")" -eq 2 ] && [ "$hn" -eq "$rn" ] && [ "$ns" = 3 ] && [ "$bw" = 1 ] &&
        head -1 "$TMP/bench.csv" | grep -q '^label,kernels,threads,weights,act,prompt_len,canvas,steps,ms_per_step,.*,peak_amx_bf16_ld,.*,mem_read_gbs,ms_first_step,enc_experts_ms,enc_experts_gflops,enc_experts_pct_of_int8$'; then ok bench-csv
    else bad bench-csv "header $hn fields, row $rn, peak_samples '$ns', bandwidth and step times > 0: '$bw': $(cat "$TMP/bench.csv")"; fi
else
    bad bench-csv "$(cat "$TMP/err")"
fi
if "$BIN" bench --gemm --only gate_up8 --reps 1 -t 1 >"$TMP/out" 2>"$TMP/err" && grep -q '^gate_up8 ' "$TMP/out" && grep -q 'int8_pk$' "$TMP/out"; then ok bench-gemm
else bad bench-gemm "$(cat "$TMP/out" "$TMP/err")"; fi

# ===== help =====
for cmd in run chat generate forward inspect bench tokenize detokenize; do
    if "$BIN" $cmd --help >"$TMP/out" 2>&1 && grep -q "usage: dgemma $cmd" "$TMP/out"; then ok "help-$cmd"; else bad "help-$cmd" "$(head -2 "$TMP/out")"; fi
done
if "$BIN" --help | grep -q "^  run " && "$BIN" --help | grep -q "^  chat "; then ok help-lists-run-chat; else bad help-lists-run-chat "not listed"; fi

# ===== errors: usage (2), run time (1) =====
exit_is() {   # exit_is NAME CODE CMD...: the exit status of a command (stdin empty)
    local name=$1 want=$2; shift 2
    "$@" >/dev/null 2>&1 </dev/null
    local got=$?
    if [ $got -eq "$want" ]; then ok "$name"; else bad "$name" "exit $got, want $want"; fi
}
R="$BIN run -m $M -p hi"
expect_fail run-no-model "--model is required" "$BIN" run -p hi
expect_fail run-missing-model "config.json" "$BIN" run -m "$TMP/none" -p hi
exit_is run-missing-model-exit 1 "$BIN" run -m "$TMP/none" -p hi
expect_fail run-unknown "unknown option '--frobnicate'" $R --frobnicate
exit_is run-unknown-exit 2 $R --frobnicate
expect_fail run-no-value "needs a value" "$BIN" run -m "$M" -p
expect_fail run-steps-0 "--steps expects" $R --steps 0
exit_is run-steps-0-exit 2 $R --steps 0
expect_fail run-seed "--seed expects" $R --seed -1
expect_fail run-tmax "t_max must be" $R --t-min 0.9 --t-max 0.5
expect_fail run-eos-vocab "outside the vocabulary" $R --eos 99999
expect_fail run-kernels "--kernels expects" $R --kernels fastest
expect_fail run-empty-prompt "prompt is empty" "$BIN" run -m "$M" -p ""
exit_is run-empty-prompt-exit 2 "$BIN" run -m "$M" -p ""
expect_fail run-empty-stdin "prompt is empty" "$BIN" run -m "$M"
expect_fail run-n-ctx "exceed n_ctx" $R --n-ctx 8
printf '\xff\xfe bad\n' >"$TMP/bad-utf8.txt"
if "$BIN" run -m "$M" <"$TMP/bad-utf8.txt" >"$TMP/out" 2>"$TMP/err"; then bad run-invalid-utf8 "exit 0"
elif [ $? -eq 2 ] && grep -q "not valid UTF-8" "$TMP/err" && [ ! -s "$TMP/out" ]; then ok run-invalid-utf8
else bad run-invalid-utf8 "$(cat "$TMP/err")"; fi
if printf 'hi\n\xff bad\nok\n' | "$BIN" chat -m "$M" -q -n 16 --steps 2 >"$TMP/out" 2>"$TMP/err" && grep -q "not valid UTF-8" "$TMP/err" &&
   [ "$(wc -l <"$TMP/out")" -ge 2 ]; then ok chat-invalid-utf8-line
else bad chat-invalid-utf8-line "$(cat "$TMP/err")"; fi
printf '{%% if %%}' >"$TMP/tpl/chat_template.jinja"
expect_fail run-bad-template "chat_template.jinja:1" "$BIN" run -m "$TMP/tpl" -p hi
exit_is run-bad-template-exit 1 "$BIN" run -m "$TMP/tpl" -p hi
expect_fail chat-no-model "--model is required" "$BIN" chat
expect_fail chat-no-prompt-option "unknown option '-p'" "$BIN" chat -m "$M" -p hi
expect_fail chat-raw "unknown option '--raw'" "$BIN" chat -m "$M" --raw
exit_is chat-missing-model-exit 1 "$BIN" chat -m "$TMP/none"

echo "$pass passed, $fail failed"
