#!/usr/bin/env bash
# test_server.sh - `dgemma serve` over loopback on the bundled tiny model.
#   1. with curl (no Python): health, page, models, a completion, a stream, the error statuses, the API
#      key, a clean exit on SIGTERM;
#   2. tests/server/test_server.py: the official openai client, 20 concurrent clients with hang-ups,
#      malformed requests, the web page in headless Chromium. Skipped (with the reason) when python3 or
#      the openai package is missing: `pip install -r tests/requirements-server.txt` (.ci/run does).
# Usage: tests/test_server.sh ./dgemma   (from the repository root; prints "N passed, N failed")
set -u
BIN=${1:-./dgemma}
FIX=${DG_FIXTURES:-tests/fixtures}
M=$FIX/tiny-a/bf16
PREFIX=server
. "$(dirname "$0")/cli_lib.sh"

if ! command -v curl >/dev/null; then
    echo "[ SKIP ] server/curl: skipped: curl is not installed (tools/install-deps.sh installs it)"
else
    # start_server ARGS...: sets PID and URL (a free port chosen by the server)
    start_server() {
        "$BIN" serve -m "$M" --port 0 -t 1 "$@" 2>"$TMP/server.log" &
        PID=$!
        URL=
        for _ in $(seq 600); do
            URL=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$TMP/server.log" | sed 's/listening on //')
            [ -n "$URL" ] && break
            kill -0 $PID 2>/dev/null || break
            sleep 0.05
        done
    }
    # stop_server NAME: SIGTERM, exit status 0, no sanitizer report
    stop_server() {
        kill -TERM $PID
        wait $PID
        local rc=$?
        if [ $rc -ne 0 ]; then bad "$1" "exit status $rc: $(tail -5 "$TMP/server.log")"
        elif grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TMP/server.log"; then bad "$1" "$(grep -A20 -E 'Sanitizer|runtime error' "$TMP/server.log" | head -40)"
        else ok "$1"; fi
    }
    # req NAME WANT_STATUS WANT_TEXT METHOD PATH [BODY [CURL_ARGS...]]
    req() {
        local name=$1 want=$2 pat=$3 method=$4 path=$5 body=${6-}
        shift 5; [ $# -gt 0 ] && shift
        local st
        if [ -n "$body" ]; then
            st=$(curl -s -o "$TMP/body" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json' --data-binary "$body" "$@" "$URL$path")
        else
            st=$(curl -s -o "$TMP/body" -w '%{http_code}' -X "$method" "$@" "$URL$path")
        fi
        if [ "$st" = "$want" ] && grep -q -- "$pat" "$TMP/body"; then ok "$name"; else bad "$name" "status $st, body $(head -c 300 "$TMP/body")"; fi
    }

    start_server
    if [ -z "$URL" ]; then bad start "$(cat "$TMP/server.log")"
    else
        ok start
        req health 200 '"status":"ok"' GET /health
        req page 200 '<title>dgemma</title>' GET /
        req models 200 '"object":"list"' GET /v1/models
        req completion 200 '"finish_reason":"length"' POST /v1/completions '{"prompt":[2,900,901],"max_tokens":16,"seed":1,"max_denoising_steps":4,"ignore_eos":true}'
        if grep -q '"completion_tokens":16' "$TMP/body"; then ok completion-usage; else bad completion-usage "$(cat "$TMP/body")"; fi
        req chat-stream 200 'data: \[DONE\]' POST /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":20,"stream":true,"max_denoising_steps":4}' -N
        if grep -q '"delta":{"role":"assistant"' "$TMP/body" && grep -q 'chat.completion.chunk' "$TMP/body"; then ok chat-stream-chunks; else bad chat-stream-chunks "$(head -c 400 "$TMP/body")"; fi
        req bad-json 400 '"code":"invalid_json"' POST /v1/chat/completions '{"messages":'
        req bad-type 400 '"param":"messages"' POST /v1/chat/completions '{"messages":"hi"}'
        req bad-value 422 '"param":"t_max"' POST /v1/chat/completions '{"messages":[{"role":"user","content":"x"}],"t_max":0.01}'
        req not-found 404 '"code":"not_found"' GET /v1/nothing
        req bad-method 405 '"code":"method_not_allowed"' GET /v1/chat/completions
        head -c $((9 << 20)) /dev/zero | tr '\0' ' ' >"$TMP/big.json"
        req too-large 413 '"code":"request_too_large"' POST /v1/completions "@$TMP/big.json"
        req still-up 200 '"text_completion"' POST /v1/completions '{"prompt":"Hi","max_tokens":4,"max_denoising_steps":2}'
        if [ "$(grep -c ' POST /v1/' "$TMP/server.log")" -ge 7 ]; then ok access-log; else bad access-log "$(cat "$TMP/server.log")"; fi
        stop_server exit
    fi

    start_server --api-key k3y
    if [ -n "$URL" ]; then
        req key-missing 401 '"code":"invalid_api_key"' GET /v1/models
        req key-wrong 401 '"code":"invalid_api_key"' GET /v1/models '' -H 'Authorization: Bearer nope'
        req key-right 200 '"object":"list"' GET /v1/models '' -H 'Authorization: Bearer k3y'
        req key-health-open 200 '"status":"ok"' GET /health
        stop_server key-exit
    else bad key-start "$(cat "$TMP/server.log")"; fi
fi

# the Python tier
if ! command -v python3 >/dev/null; then
    echo "[ SKIP ] server/python: skipped: python3 is not installed"
elif ! python3 -c 'import openai' 2>/dev/null; then
    echo "[ SKIP ] server/python: skipped: the openai package is missing (pip install -r tests/requirements-server.txt)"
else
    python3 tests/server/test_server.py "$BIN" | tee "$TMP/py.log"
    line=$(grep -E '^server-py: [0-9]+ passed, [0-9]+ failed' "$TMP/py.log" | tail -1)
    if [ -z "$line" ]; then bad python "no summary (crashed?)"
    else
        pass=$((pass + $(echo "$line" | cut -d' ' -f2)))
        fail=$((fail + $(echo "$line" | cut -d' ' -f4)))
    fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
