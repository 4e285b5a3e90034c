#!/usr/bin/env bash
# API fuzzing: schemathesis generates requests from the server's own /openapi.json (valid and
# invalid ones) and fails on any 5xx answer ("not_a_server_error") or a server that dies.
#
# Called by .ci/run after `cargo test`, which has built the debug `attest` binary. Standalone:
#   bash .ci/schemathesis.sh            # uses $CARGO_TARGET_DIR/{debug,release}/attest
#   ATTEST_BIN=/path/to/attest bash .ci/schemathesis.sh
#   SCHEMATHESIS_MAX_EXAMPLES=50 SCHEMATHESIS_MAX_TIME=90 bash .ci/schemathesis.sh
#
# It starts `attest serve` on a fresh temporary data directory and a free loopback port, waits
# for /readyz, runs the fuzzer within a bounded budget (about two minutes at most), and leaves
# its reports under $CARGO_TARGET_DIR/schemathesis-report.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/attest-target}"
VENV="$HOME/.cache/attest-schemathesis"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-300}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-150}" # hard bound on the fuzzer (seconds)
SEED="${SCHEMATHESIS_SEED:-20261126}"
REPORT_DIR="$CARGO_TARGET_DIR/schemathesis-report"

log() { printf '== schemathesis: %s\n' "$*"; }

# The fuzzer, pinned, in its own virtualenv (created once, reused while the version matches).
if [ ! -x "$VENV/bin/schemathesis" ] ||
  [ "$("$VENV/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The server binary.
BIN="${ATTEST_BIN:-}"
if [ -z "$BIN" ]; then
  for candidate in "$CARGO_TARGET_DIR/debug/attest" "$CARGO_TARGET_DIR/release/attest"; do
    if [ -x "$candidate" ]; then BIN="$candidate"; break; fi
  done
fi
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
  echo "schemathesis.sh: no attest binary found; build it first (cargo build -p attest) or set ATTEST_BIN" >&2
  exit 1
fi

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:$PORT"
DATA_DIR="$(mktemp -d -t attest-schemathesis.XXXXXX)"
SERVER_LOG="$DATA_DIR/server.log"
SERVER_PID=""

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$SERVER_LOG" ]; then
    echo "---- last lines of the server log ($SERVER_LOG) ----" >&2
    tail -n 60 "$SERVER_LOG" >&2 || true
  fi
  rm -rf "$DATA_DIR"
  exit "$rc"
}
trap cleanup EXIT

# An admin key, so that the fuzzer reaches every operation's input handling instead of the auth
# gate (keys are optional on loopback, but a malformed or unknown key is refused with 401).
API_KEY="$("$BIN" --data-dir "$DATA_DIR/data" --json keys create --scopes admin --name schemathesis |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')"

log "starting $BIN serve on $BASE (data dir $DATA_DIR)"
ATTEST_LOG="${ATTEST_LOG:-warn}" "$BIN" --data-dir "$DATA_DIR/data" serve --bind "127.0.0.1:$PORT" \
  >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

ready=""
for _ in $(seq 1 600); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "schemathesis.sh: attest serve exited before it became ready" >&2
    exit 1
  fi
  if curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "schemathesis.sh: $BASE/readyz did not answer 2xx within 60 s" >&2
  exit 1
fi
log "server ready; fuzzing $BASE/openapi.json (max $MAX_EXAMPLES examples per operation, at most $MAX_TIME s)"

mkdir -p "$REPORT_DIR"
# One worker: hypothesis parses strategy sources with `ast` while describing them, and CPython
# before 3.11.9 / 3.12.3 is not thread-safe there ("AST constructor recursion depth mismatch",
# CPython gh-106905); two worker threads made that runtime error fail a CI run.
set +e
timeout --signal=INT --kill-after=10 "$MAX_TIME" \
  "$VENV/bin/schemathesis" run "$BASE/openapi.json" \
  --checks not_a_server_error \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$MAX_EXAMPLES" \
  --header "Authorization: Bearer $API_KEY" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 10 \
  --suppress-health-check all \
  --report junit,ndjson --report-dir "$REPORT_DIR"
st_rc=$?
set -e

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "schemathesis.sh: attest serve died during the run" >&2
  exit 1
fi
if grep -q "panicked at" "$SERVER_LOG"; then
  echo "schemathesis.sh: the server log shows a panic:" >&2
  grep -m 5 -A 3 "panicked at" "$SERVER_LOG" >&2
  exit 1
fi
if [ "$st_rc" -eq 124 ]; then
  echo "schemathesis.sh: schemathesis did not finish within $MAX_TIME s" >&2
  exit 1
fi
if [ "$st_rc" -ne 0 ]; then
  echo "schemathesis.sh: schemathesis failed (exit $st_rc); reports in $REPORT_DIR" >&2
  exit "$st_rc"
fi
log "no server error on any generated request"
