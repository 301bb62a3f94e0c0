#!/usr/bin/env bash
# Runs the unit and integration tests (-race) and keeps the full verbose log
# in test.log. What a CI reader needs comes last: on a failure, every failed
# test with the lines it printed, and on a timeout the tests that were
# running (Go prints that list at the top of a goroutine dump that can run to
# thousands of lines).
set -uo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
LOG="${TEST_LOG:-test.log}"
TIMEOUT="${TEST_TIMEOUT:-25m}"

"$GO" test -race -count=1 -timeout "$TIMEOUT" -v ./... >"$LOG" 2>&1 &
pid=$!
# Progress while it runs: package results and failures as they happen.
tail -n +1 -F "$LOG" --pid="$pid" 2>/dev/null | grep --line-buffered -E '^(ok|FAIL|--- FAIL|panic:)' &
wait "$pid"
rc=$?
sleep 0.5
if [ "$rc" -ne 0 ]; then
  echo
  echo "==== tests failed (exit $rc); full log: $LOG"
  if grep -q '^panic: test timed out' "$LOG"; then
    echo "---- timed out; tests running at the time:"
    grep -A 12 '^panic: test timed out' "$LOG" | grep -E '^(panic|running tests|\s)' | head -20
  fi
  # Each failed test's own output (go test -v prints it between RUN and FAIL).
  for t in $(grep -E '^\s*--- FAIL: ' "$LOG" | sed -E 's/^\s*--- FAIL: ([^ ]+).*/\1/' | sort -u | head -20); do
    echo "---- $t"
    out=$(awk -v t="$t" '$0 ~ "^=== (RUN|CONT|PAUSE|NAME)  *"t"$" {on=1} on {print} $0 ~ "--- FAIL: "t" " {on=0}' "$LOG" | grep -v '^=== ')
    # The test's own lines (file_test.go:N: ...) first: a harness's log
    # dump on failure comes after them and would push them out of the tail.
    echo "$out" | grep -E '^\s+[A-Za-z0-9_]+_test\.go:[0-9]+: ' | head -20
    echo "  -- last lines:"
    echo "$out" | tail -25
  done
  echo "---- summary"
  grep -E '^(ok|FAIL|--- FAIL|panic:)' "$LOG" | tail -40
fi
exit "$rc"
