#!/usr/bin/env bash
# Same-run A/B of two router builds over TLS + HTTP/2 (and h2c): both
# routers run side by side on one Consul and one upstream
# (test/bench/proxy/upstream), and h2load runs against each in turn,
# alternating who goes first. Besides req/s and mean latency (which on a
# machine shared with other work swing with everyone else's load) it
# reports per request what is much steadier under contention: the router's
# CPU time (/proc/PID/stat), its read/write system calls (/proc/PID/io)
# and its heap allocations (runtime MemStats.Mallocs via /debug/pprof).
#
#   A=/tmp/old-switchyard B=bin/switchyard scripts/bench-h2-ab.sh
#
# Environment (defaults in brackets): A, B (router binaries; B
# [bin/switchyard, built here]), ROUNDS [3], DURATION [6] (seconds),
# H2_CLIENTS [16], H2_STREAMS [10], THREADS [2], H2C [0] (1: also h2c
# with prior knowledge on the plaintext listener), PROFILE ["" or A or B]:
# instead of rounds, one run against that router with a CPU profile and
# allocation profiles before/after into $WORK (printed), e.g.
#   go tool pprof -top -cum B.bin cpu-B.pprof
#   go tool pprof -sample_index=alloc_objects -base allocs0-B.pprof -top B.bin allocs1-B.pprof
# Needs h2load (nghttp2-client), openssl, curl. Not part of `make test`.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-6}"
H2_CLIENTS="${H2_CLIENTS:-16}"
H2_STREAMS="${H2_STREAMS:-10}"
THREADS="${THREADS:-2}"
H2C="${H2C:-0}"
PROFILE="${PROFILE:-}"
REQ_PATH="/t/bench/orders"

BENCH_NAME=bench-h2-ab
. "$REPO_ROOT/scripts/bench-lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-h2-ab.XXXXXX")
PIDS=()
cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do wait "${PIDS[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}

if [ -z "${B:-}" ]; then
  go build -o bin/switchyard ./cmd/switchyard
  B=bin/switchyard
fi
[ -n "${A:-}" ] || die "set A to the router binary to compare against"
ensure_commands h2load:nghttp2-client openssl:openssl curl:curl
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj "/CN=bench.test" \
  -addext "subjectAltName=DNS:bench.test,DNS:*.bench.test" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
go build -o "$WORK/bin/" ./test/bench/proxy/upstream ./test/bench/proxy/seed
free_port UPSTREAM_PORT
start upstream "$WORK/bin/upstream" -listen "127.0.0.1:$UPSTREAM_PORT"
free_port CONSUL_HTTP_PORT; free_port serf_lan; free_port serf_wan; free_port server
start consul bin/consul agent -dev -node bench-h2-ab -bind 127.0.0.1 -client 127.0.0.1 \
  -http-port "$CONSUL_HTTP_PORT" -https-port -1 -dns-port -1 -grpc-port -1 -grpc-tls-port -1 \
  -serf-lan-port "$serf_lan" -serf-wan-port "$serf_wan" -server-port "$server" \
  -log-level warn -hcl 'disable_update_check = true'
wait_until 30 "a Consul leader" consul_has_leader
"$WORK/bin/seed" -consul "127.0.0.1:$CONSUL_HTTP_PORT" -upstream-port "$UPSTREAM_PORT" \
  -cert "$WORK/cert.pem" -key "$WORK/key.pem" >&2

declare -A PLAIN TLSP ADMIN RPID
for w in A B; do
  free_port "PLAIN[$w]"; free_port "TLSP[$w]"; free_port "ADMIN[$w]"
  cp "${!w}" "$WORK/$w.bin"
  start "router-$w" env GOGC=400 "$WORK/$w.bin" router -listen "127.0.0.1:${PLAIN[$w]}" -admin "127.0.0.1:${ADMIN[$w]}" \
    -tls-listen "127.0.0.1:${TLSP[$w]}" -consul "127.0.0.1:$CONSUL_HTTP_PORT" -path-prefix=true -log-level warn -admin-pprof=true
  RPID[$w]=${PIDS[-1]}
done
ok_h2() { [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 --http2 "$1")" = 200 ]; }
for w in A B; do wait_until 30 "router $w over h2" ok_h2 "https://127.0.0.1:${TLSP[$w]}$REQ_PATH"; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
syscalls() { awk '/^sysc[rw]:/ {s += $2} END {print s}' "/proc/$1/io"; }
mallocs() { curl -s "http://127.0.0.1:${ADMIN[$1]}/debug/pprof/heap?debug=1" | awk '/^# Mallocs = / {print $4}'; }

# h2_run WHO URL -> one line of figures
h2_run() {
  local who=$1 url=$2 pid=${RPID[$1]} out c0 s0 m0 c1 s1 m1 n
  c0=$(cpu_ticks "$pid"); s0=$(syscalls "$pid"); m0=$(mallocs "$who")
  out=$(h2load -c "$H2_CLIENTS" -m "$H2_STREAMS" -t "$THREADS" -D "$DURATION" "$url")
  c1=$(cpu_ticks "$pid"); s1=$(syscalls "$pid"); m1=$(mallocs "$who")
  echo "$out" >>"$WORK/h2load.log"
  grep -q "status codes: [1-9][0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx" <<<"$out" || die "h2load against $url saw errors: $(grep 'status codes' <<<"$out")"
  n=$(awk '/^status codes:/ {print $3}' <<<"$out")
  awk -v ticks=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v sc=$((s1 - s0)) -v ma=$((m1 - m0)) -v n="$n" \
    '/^finished in/ {rps = $4} /^time for request:/ {mean = $6}
     END {printf "%8.0f req/s  mean %-8s  cpu %5.1f us/req  syscalls %4.2f/req  mallocs %5.1f/req\n", rps, mean, ticks * 1e6 / hz / n, sc / n, ma / n}' <<<"$out"
}

echo "bench-h2-ab: A=$A B=$B; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); h2load -c$H2_CLIENTS -m$H2_STREAMS -t$THREADS -D$DURATION"
if [ -n "$PROFILE" ]; then
  w=$PROFILE
  curl -s -o "$WORK/allocs0-$w.pprof" "http://127.0.0.1:${ADMIN[$w]}/debug/pprof/allocs"
  curl -s -o "$WORK/cpu-$w.pprof" "http://127.0.0.1:${ADMIN[$w]}/debug/pprof/profile?seconds=$((DURATION > 2 ? DURATION - 1 : 1))" &
  prof=$!
  echo "$w tls: $(h2_run "$w" "https://127.0.0.1:${TLSP[$w]}$REQ_PATH")"
  wait "$prof"
  curl -s -o "$WORK/allocs1-$w.pprof" "http://127.0.0.1:${ADMIN[$w]}/debug/pprof/allocs"
  trap - EXIT
  cleanup
  echo "profiles and binaries in $WORK"
  exit 0
fi
for ((r = 1; r <= ROUNDS; r++)); do
  order=(A B)
  [ $((r % 2)) = 0 ] && order=(B A)
  for w in "${order[@]}"; do
    echo "round $r $w tls: $(h2_run "$w" "https://127.0.0.1:${TLSP[$w]}$REQ_PATH")  (load $(cut -d' ' -f1 /proc/loadavg))"
    [ "$H2C" = 1 ] && echo "round $r $w h2c: $(h2_run "$w" "http://127.0.0.1:${PLAIN[$w]}$REQ_PATH")"
  done
done
rm -rf "$WORK"
