# cli_lib.sh - sourced by the CLI test scripts: a temporary folder ($TMP), the counters, ok / bad, and
# expect_fail. Set PREFIX (the prefix of the test names) before sourcing.

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "[ OK   ] $PREFIX/$1"; }
bad() { fail=$((fail + 1)); echo "[ FAIL ] $PREFIX/$1: $2"; }

# expect_fail NAME PATTERN CMD...: non-zero exit, PATTERN on stderr, nothing on stdout (stdin empty)
expect_fail() {
    local name=$1 pat=$2; shift 2
    if "$@" >"$TMP/out" 2>"$TMP/err" </dev/null; then bad "$name" "exit 0"; return; fi
    if ! grep -q -- "$pat" "$TMP/err"; then bad "$name" "stderr lacks '$pat': $(cat "$TMP/err")"; return; fi
    if [ -s "$TMP/out" ]; then bad "$name" "stdout not empty"; return; fi
    ok "$name"
}
