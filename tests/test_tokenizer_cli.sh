#!/usr/bin/env bash
# test_tokenizer_cli.sh - `dgemma tokenize` and `dgemma detokenize` on the committed small tokenizer
# (tests/fixtures/tiny-a/f32, expected ids from PyPI tokenizers in tests/fixtures/tokenizer), and
# their error paths (non-zero exit, a message on stderr, nothing on stdout).
# Usage: tests/test_tokenizer_cli.sh ./dgemma   (run from the repository root; prints "N passed, N failed")
set -u
BIN=${1:-./dgemma}
FIX=${DG_FIXTURES:-tests/fixtures}
M=$FIX/tiny-a/f32
PREFIX=tokcli
. "$(dirname "$0")/cli_lib.sh"

# the expected ids of a corpus text (its JSON form) from the reference
want_ids() { awk -F'\t' -v t="$1" '$1 == t { print $2; exit }' "$FIX/tokenizer/small-corpus.tsv"; }

w=$(want_ids '"Hello, world!"')
got=$("$BIN" tokenize -m "$M" -p 'Hello, world!' --ids-only 2>"$TMP/err")
if [ -n "$w" ] && [ "$got" = "$w" ]; then ok tokenize-ids; else bad tokenize-ids "got '$got' want '$w'"; fi
got=$(printf '%s' ' this is 🦙.cpp' | "$BIN" tokenize -m "$M/tokenizer.json" --ids-only 2>/dev/null)
w=$(want_ids '" this is 🦙.cpp"')
if [ -n "$w" ] && [ "$got" = "$w" ]; then ok tokenize-stdin-file; else bad tokenize-stdin-file "got '$got' want '$w'"; fi
if grep -q "bytes -> " "$TMP/err"; then ok tokenize-stats; else bad tokenize-stats "$(cat "$TMP/err")"; fi
# one token per line: id, tab, escaped piece; special tokens written in the text are recognised
"$BIN" tokenize -m "$M" -p $'<|turn>user\nHi<turn|>' >"$TMP/out" 2>/dev/null
if [ "$(head -1 "$TMP/out")" = $'105\t<|turn>' ] && grep -qx $'107\t\\\\n' "$TMP/out" && [ "$(tail -1 "$TMP/out")" = $'106\t<turn|>' ]; then
    ok tokenize-pieces
else bad tokenize-pieces "$(cat "$TMP/out")"; fi
# round trip through detokenize (arguments and stdin), with and without special tokens
text=$'<bos>Grüße,  wörld!\n\tx = 42 🦙<eos>'
ids=$("$BIN" tokenize -m "$M" -p "$text" --ids-only 2>/dev/null)
# shellcheck disable=SC2086
got=$("$BIN" detokenize -m "$M" $ids)
if [ "$got" = "$text" ]; then ok detokenize-args; else bad detokenize-args "got '$got'"; fi
got=$(echo "[$ids]" | tr ' ' ',' | "$BIN" detokenize -m "$M" --skip-special)
if [ "$got" = $'Grüße,  wörld!\n\tx = 42 🦙' ]; then ok detokenize-stdin-skip-special; else bad detokenize-stdin-skip-special "got '$got'"; fi
# a UTF-8 character split over byte tokens, and an invalid byte run (one U+FFFD per byte)
got=$("$BIN" detokenize -m "$M" $((238 + 0xE2)) $((238 + 0x82)) $((238 + 0xAC)) | od -An -tx1 | tr -d ' \n')
if [ "$got" = "e282ac" ]; then ok detokenize-bytes; else bad detokenize-bytes "$got"; fi
got=$("$BIN" detokenize -m "$M" $((238 + 0xE2)) $((238 + 0x82)) | od -An -tx1 | tr -d ' \n')
if [ "$got" = "efbfbdefbfbd" ]; then ok detokenize-invalid-run; else bad detokenize-invalid-run "$got"; fi
if "$BIN" tokenize --help | grep -q -- --ids-only && "$BIN" detokenize --help | grep -q -- --skip-special &&
   "$BIN" --help | grep -q detokenize; then ok help; else bad help "help text"; fi

# errors
printf '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [[\n' >"$TMP/bad.json"
expect_fail tok-missing-model "No such file" "$BIN" tokenize -m "$TMP/none" -p x
expect_fail tok-no-model "--model is required" "$BIN" tokenize -p x
expect_fail tok-no-value "needs a value" "$BIN" tokenize -m "$M" -p
expect_fail tok-unknown "unknown option" "$BIN" tokenize -m "$M" --bogus
expect_fail tok-bad-json "bad.json:2:1" "$BIN" tokenize -m "$TMP/bad.json" -p x
expect_fail tok-dir-without "tokenizer.json" "$BIN" tokenize -m "$TMP" -p x
expect_fail detok-missing-model "No such file" "$BIN" detokenize -m "$TMP/none" 1 2
expect_fail detok-no-model "--model is required" "$BIN" detokenize 1 2
expect_fail detok-out-of-range "outside the vocabulary \[0, 2048)" "$BIN" detokenize -m "$M" 1 2048
expect_fail detok-negative "outside the vocabulary" "$BIN" detokenize -m "$M" -3
expect_fail detok-not-a-number "unexpected character 'x'" "$BIN" detokenize -m "$M" 1 x2
expect_fail detok-unknown "unknown option" "$BIN" detokenize -m "$M" --frob
if echo "1 abc" | "$BIN" detokenize -m "$M" >"$TMP/out" 2>"$TMP/err"; then bad detok-stdin-bad "exit 0"
elif grep -q "stdin" "$TMP/err"; then ok detok-stdin-bad; else bad detok-stdin-bad "$(cat "$TMP/err")"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
