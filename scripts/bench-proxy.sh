#!/usr/bin/env bash
# Proxy benchmark: the Switchyard router against nginx and HAProxy on loopback.
#
# wrk drives the same tiny upstream (test/bench/proxy/upstream) four ways:
#   direct   127.0.0.1:18080  the upstream itself, no proxy
#   nginx    127.0.0.1:18081  ../shared/peers/nginx.conf
#   haproxy  127.0.0.1:18085  ../shared/peers/haproxy.cfg
#   router   127.0.0.1:18090  bin/switchyard router, full logic: tenant from
#                             /t/<tenant>/, catalog snapshot from Consul,
#                             Consul health, breakers, metrics
# in interleaved rounds (the order rotates every round), then prints each
# round, a summary (medians over rounds, ratios to nginx) and writes it as
# JSON to bench/results/proxy-<timestamp>.json.
# Goal: router >= 0.9x nginx throughput and p99 <= 1.2x nginx's.
# wrk, the proxies and the upstream share the machine's cores; every run also
# records how much CPU other work on the machine took meanwhile, and runs
# where that exceeded 10% are flagged "disturbed": don't quote those.
#
# Environment (defaults in brackets):
#   ROUNDS [5]  DURATION [10s]  WARMUP [2s]  THREADS [2]  CONNECTIONS [64]
#   ROUTER_GOGC [400]  PEERS_DIR [<repo>/../shared/peers]  KEEP_WORK [0]
#   BASELINE_BIN []: another switchyard binary (say the previous commit's)
#     measured as target "baseline" on :18092 in the same interleaved rounds,
#     so a change's cost is read against its own base, not across runs
#   ROUTER_ARGS [], BASELINE_ARGS []: extra flags for the router and the
#     baseline, so one feature's cost is measured alone, e.g.
#     BASELINE_BIN=bin/switchyard BASELINE_ARGS="-no-usage" (metering),
#     "-no-request-id" (request ids), ROUTER_ARGS="-access-log /tmp/a.log"
#   PROFILE [0]: 1 takes a CPU profile of the router during its first
#     measured run, into bench/results/router-<timestamp>.pprof
#     (go tool pprof -top bin/switchyard <file>)
# Quick check: ROUNDS=1 DURATION=3s scripts/bench-proxy.sh
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
ROUTER_GOGC="${ROUTER_GOGC:-400}"
PEERS_DIR="${PEERS_DIR:-$REPO_ROOT/../shared/peers}"
ROUTER_ARGS="${ROUTER_ARGS:-}"
BASELINE_ARGS="${BASELINE_ARGS:-}"
KEEP_WORK="${KEEP_WORK:-0}"
PROFILE="${PROFILE:-0}"

# Fixed by the peer configs (upstream, nginx, haproxy) and chosen for the router.
UPSTREAM_PORT=18080
NGINX_PORT=18081
HAPROXY_PORT=18085
ROUTER_PORT=18090
ROUTER_ADMIN_PORT=18091
BASELINE_PORT=18092
BASELINE_ADMIN_PORT=18093
BASELINE_BIN="${BASELINE_BIN:-}"

TENANT=bench
REQ_PATH="/t/$TENANT/orders"
# Every target is sent the same X-Tenant-Id so the upstream's answer is the
# same bytes everywhere: nginx and HAProxy pass it on, the router removes the
# client's copy (untrusted) and sets its own from the path.
TENANT_HEADER="X-Tenant-Id: $TENANT"

TARGETS=(direct nginx haproxy router)
declare -A TARGET_PORT=([direct]=$UPSTREAM_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [router]=$ROUTER_PORT [baseline]=$BASELINE_PORT)
[ -z "$BASELINE_BIN" ] || TARGETS+=(baseline)

WORK=""
PIDS=()      # every process this script started, in start order
PID_NAMES=()

BENCH_NAME=bench-proxy
. "$REPO_ROOT/scripts/bench-lib.sh"

# ---------------------------------------------------------------- cleanup

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local i pid
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "${PID_NAMES[i]} (pid $pid) ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$WORK" ]; then
    # A failure keeps the logs (and shows their tails); Ctrl-C does not.
    local failed=0
    case "$status" in 0 | 130 | 143) ;; *) failed=1 ;; esac
    [ "$failed" = 0 ] || show_logs
    if [ "$KEEP_WORK" = 1 ] || [ "$failed" = 1 ]; then
      log "logs kept in $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$status"
}

show_logs() {
  local f
  for f in "$WORK"/*.log; do
    [ -s "$f" ] || continue
    printf -- '--- last lines of %s\n' "$f" >&2
    tail -n 15 "$f" >&2
  done
}

trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# start NAME CMD...: run CMD in the background, output to $WORK/NAME.log.
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  PID_NAMES+=("$name")
  log "started $name (pid $!)"
}

# alive NAME: fail if the process started as NAME has exited.
alive() {
  local i
  for i in "${!PID_NAMES[@]}"; do
    if [ "${PID_NAMES[i]}" = "$1" ]; then
      kill -0 "${PIDS[i]}" 2>/dev/null || die "$1 (pid ${PIDS[i]}) exited; see $WORK/$1.log"
      return 0
    fi
  done
  die "no process named $1"
}

# ---------------------------------------------------------------- setup

check_ports_free() {
  local p
  for p in "$UPSTREAM_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$ROUTER_PORT" "$ROUTER_ADMIN_PORT"; do
    if port_in_use "$p"; then
      die "127.0.0.1:$p is already in use (a previous run still going?): $(ss -Hltnp "( sport = :$p )" | head -1)"
    fi
  done
}

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "$TENANT_HEADER" "$1" || true; }
answers_200() { [ "$(http_status "$1")" = 200 ]; }

build() {
  log "building bin/switchyard and the benchmark helpers"
  go build -o bin/switchyard ./cmd/switchyard
  go build -o "$WORK/bin/" ./test/bench/proxy/upstream ./test/bench/proxy/seed ./test/bench/proxy/report
}

start_upstream() {
  start upstream "$WORK/bin/upstream" -listen "127.0.0.1:$UPSTREAM_PORT"
  wait_until 10 "the upstream" answers_200 "http://127.0.0.1:$UPSTREAM_PORT$REQ_PATH"
}

start_consul() {
  local serf_lan serf_wan server
  free_port CONSUL_HTTP_PORT
  free_port serf_lan
  free_port serf_wan
  free_port server
  start consul bin/consul agent -dev -node bench-proxy -bind 127.0.0.1 -client 127.0.0.1 \
    -http-port "$CONSUL_HTTP_PORT" -https-port -1 -dns-port -1 -grpc-port -1 -grpc-tls-port -1 \
    -serf-lan-port "$serf_lan" -serf-wan-port "$serf_wan" -server-port "$server" \
    -log-level warn -hcl 'disable_update_check = true'
  wait_until 30 "a Consul leader on 127.0.0.1:$CONSUL_HTTP_PORT" consul_has_leader
  "$WORK/bin/seed" -consul "127.0.0.1:$CONSUL_HTTP_PORT" -upstream-port "$UPSTREAM_PORT" >&2
}

start_peers() {
  [ -f "$PEERS_DIR/nginx.conf" ] && [ -f "$PEERS_DIR/haproxy.cfg" ] ||
    die "peer configs not found in $PEERS_DIR (set PEERS_DIR)"
  PEERS_DIR=$(cd "$PEERS_DIR" && pwd)
  mkdir -p "$WORK/nginx/logs"
  start nginx nginx -c "$PEERS_DIR/nginx.conf" -p "$WORK/nginx/"
  start haproxy haproxy -q -f "$PEERS_DIR/haproxy.cfg"
  wait_until 10 "nginx" answers_200 "http://127.0.0.1:$NGINX_PORT$REQ_PATH"
  wait_until 10 "haproxy" answers_200 "http://127.0.0.1:$HAPROXY_PORT$REQ_PATH"
}

start_router() {
  start router env GOGC="$ROUTER_GOGC" bin/switchyard router \
    -listen "127.0.0.1:$ROUTER_PORT" -admin "127.0.0.1:$ROUTER_ADMIN_PORT" \
    -consul "127.0.0.1:$CONSUL_HTTP_PORT" -path-prefix=true -admin-pprof="$([ "$PROFILE" = 1 ] && echo true || echo false)" $ROUTER_ARGS
  wait_until 30 "router /readyz" answers_200 "http://127.0.0.1:$ROUTER_ADMIN_PORT/readyz"
  wait_until 30 "a 200 through the router" answers_200 "http://127.0.0.1:$ROUTER_PORT$REQ_PATH"
  [ -n "$BASELINE_BIN" ] || return 0
  start baseline env GOGC="$ROUTER_GOGC" "$BASELINE_BIN" router \
    -listen "127.0.0.1:$BASELINE_PORT" -admin "127.0.0.1:$BASELINE_ADMIN_PORT" \
    -consul "127.0.0.1:$CONSUL_HTTP_PORT" -path-prefix=true $BASELINE_ARGS
  wait_until 30 "a 200 through the baseline router" answers_200 "http://127.0.0.1:$BASELINE_PORT$REQ_PATH"
}

# check_targets: every target answers 200 with the upstream's body for the
# bench tenant, so no target is measured serving errors.
check_targets() {
  local t url body want="{\"ok\":true,\"tenant\":\"$TENANT\"}"
  for t in "${TARGETS[@]}"; do
    url="http://127.0.0.1:${TARGET_PORT[$t]}$REQ_PATH"
    [ "$(http_status "$url")" = 200 ] || die "$t: $url did not answer 200"
    body=$(curl -s --max-time 2 -H "$TENANT_HEADER" "$url")
    [ "$body" = "$want" ] || die "$t: $url answered $body, want $want"
  done
  log "all targets answer 200 with $want"
}

# ---------------------------------------------------------------- measuring

# run_wrk TARGET DURATION OUT
run_wrk() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" --latency -H "$TENANT_HEADER" \
    "http://127.0.0.1:${TARGET_PORT[$1]}$REQ_PATH" >"$3" 2>&1 || {
    cat "$3" >&2
    die "wrk against $1 failed"
  }
}

# The machine's cores are shared with anything else running on it. Around
# every measured run the script takes the CPU time all tasks used (from
# /proc/stat) less what its own processes and wrk used: the remainder,
# as a share of the machine, is other work that skewed that run. It is an
# estimate (kernel network work outside any task counts as "other").

# machine_ticks: "busy total steal" clock ticks of all CPUs since boot.
machine_ticks() {
  awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; total = 0
                 for (i = 2; i <= NF; i++) total += $i
                 print busy, total, $9; exit }' /proc/stat
}

# own_ticks: set OWN_TICKS to the user+system ticks of the processes this
# script started (and nginx's workers) plus its finished children (wrk, curl,
# report). It must run in the script's own shell, not in $(...): `times`
# reports the children of the shell it runs in.
own_ticks() {
  local pids=("${PIDS[@]}") files=() p live child
  for p in "${!PID_NAMES[@]}"; do
    [ "${PID_NAMES[p]}" = nginx ] && pids+=($(pgrep -P "${PIDS[p]}" || true))
  done
  for p in "${pids[@]}"; do [ -r "/proc/$p/stat" ] && files+=("/proc/$p/stat"); done
  live=0
  if [ ${#files[@]} -gt 0 ]; then
    live=$(awk '{ sub(/^.*\) /, ""); s += $12 + $13 } END { print s + 0 }' "${files[@]}" 2>/dev/null || echo 0)
  fi
  # `times` line 2: children's user and system time, e.g. "0m1.230s 0m0.450s".
  times >"$WORK/times"
  child=$(awk -v hz="$CLK_TCK" 'NR == 2 { s = 0
            for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] }
            printf "%d", s * hz }' "$WORK/times")
  OWN_TICKS=$((live + child))
}

# sample_start / sample_end: bracket a run; sample_end sets OTHER_CPU_PCT and
# STEAL_PCT (hypervisor steal) for it.
sample_start() {
  read -r S_BUSY S_TOTAL S_STEAL < <(machine_ticks)
  own_ticks
  S_OWN=$OWN_TICKS
}
sample_end() {
  local busy total steal own
  read -r busy total steal < <(machine_ticks)
  own_ticks
  own=$OWN_TICKS
  read -r OTHER_CPU_PCT STEAL_PCT < <(awk -v b=$((busy - S_BUSY)) -v t=$((total - S_TOTAL)) \
    -v o=$((own - S_OWN)) -v st=$((steal - S_STEAL)) 'BEGIN {
      if (t <= 0) { print 0, 0; exit }
      other = 100 * (b - o) / t
      printf "%.1f %.1f\n", (other > 0) ? other : 0, 100 * st / t }')
}

warm_up() {
  local t
  log "warming up each target for $WARMUP"
  for t in "${TARGETS[@]}"; do
    run_wrk "$t" "$WARMUP" "$WORK/warmup-$t.out"
  done
}

measure() {
  local round i t n=${#TARGETS[@]} order=()
  for ((round = 1; round <= ROUNDS; round++)); do
    order=()
    for ((i = 0; i < n; i++)); do order+=("${TARGETS[(i + round - 1) % n]}"); done
    echo
    echo "Round $round/$ROUNDS (order: ${order[*]})"
    for i in "${!order[@]}"; do
      t=${order[i]}
      local prof_pid=""
      if [ "$PROFILE" = 1 ] && [ "$t" = router ] && [ "$round" = 1 ]; then
        local secs=${DURATION%s}
        curl -s --max-time $((secs + 10)) -o "$REPO_ROOT/bench/results/router-$STAMP.pprof" \
          "http://127.0.0.1:$ROUTER_ADMIN_PORT/debug/pprof/profile?seconds=$((secs > 2 ? secs - 1 : 1))" &
        prof_pid=$!
      fi
      sample_start
      run_wrk "$t" "$DURATION" "$WORK/wrk-$round-$t.out"
      sample_end
      if [ -n "$prof_pid" ]; then
        wait "$prof_pid" || true
        log "router CPU profile: bench/results/router-$STAMP.pprof"
      fi
      "$WORK/bin/report" add -results "$RESULTS" -round "$round" -order "$((i + 1))" -target "$t" \
        -other-cpu "$OTHER_CPU_PCT" -steal "$STEAL_PCT" <"$WORK/wrk-$round-$t.out"
      alive upstream
      alive nginx
      alive haproxy
      alive router
      [ -z "$BASELINE_BIN" ] || alive baseline
    done
    echo
    "$WORK/bin/report" round -results "$RESULTS" -round "$round"
  done
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# cpu_busy_pct: how busy all cores are over one second, in percent. Run while
# this script's own processes idle, it measures everyone else's load.
cpu_busy_pct() {
  local a b
  a=$(head -n 1 /proc/stat)
  sleep 1
  b=$(head -n 1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x); split(b, y); total = 0
    for (i = 2; i <= n; i++) total += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    printf "%d", (total > 0) ? 100 * (total - idle) / total : 0
  }'
}

# check_idle: the benchmark shares the cores with everything else on the
# machine; other work skews every target, and not evenly.
check_idle() {
  CPU_BUSY_BEFORE=$(cpu_busy_pct)
  if [ "$CPU_BUSY_BEFORE" -gt 15 ]; then
    log "WARNING: the CPUs are ${CPU_BUSY_BEFORE}% busy with other work before the run; the figures will be skewed"
  fi
}

first_line() { "$@" 2>&1 | head -n 1 || true; }

summarize() {
  local stamp=$1 out="bench/results/proxy-$1.json" commit dirty=""
  mkdir -p bench/results
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -z "$(git status --porcelain 2>/dev/null)" ] || dirty="+dirty"
  echo
  "$WORK/bin/report" summary -results "$RESULTS" -json "$out" \
    -meta "git_commit=$commit$dirty" \
    -meta "rounds=$ROUNDS" -meta "duration=$DURATION" -meta "warmup=$WARMUP" \
    -meta "wrk_threads=$THREADS" -meta "wrk_connections=$CONNECTIONS" \
    -meta "path=$REQ_PATH" -meta "router_gogc=$ROUTER_GOGC" \
    -meta "cpus=$(nproc)" -meta "cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    -meta "kernel=$(uname -r)" -meta "cpu_busy_before_pct=$CPU_BUSY_BEFORE" -meta "loadavg_end=$(loadavg)" \
    -meta "cpu_sharing=wrk, the proxy and the upstream share the same $(nproc) cores, unpinned" \
    -meta "go=$(go env GOVERSION)" \
    -meta "nginx=$(first_line nginx -v)" -meta "haproxy=$(first_line haproxy -v)" \
    -meta "wrk=$(first_line wrk -v)" -meta "consul=$(first_line bin/consul version)"
  echo
  echo "JSON summary: $out"
}

main() {
  [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"
  scripts/tools.sh >&2
  ensure_commands nginx:nginx-light haproxy:haproxy wrk:wrk
  command -v ss >/dev/null || die "ss (iproute2) is needed to check ports"
  check_ports_free
  CLK_TCK=$(getconf CLK_TCK)
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-proxy.XXXXXX")
  RESULTS="$WORK/results.jsonl"
  local stamp
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  STAMP=$stamp
  mkdir -p "$REPO_ROOT/bench/results"

  build
  start_upstream
  start_consul
  start_peers
  start_router
  check_targets
  check_idle

  echo "Switchyard proxy benchmark, $stamp"
  echo "  wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -H '$TENANT_HEADER' http://127.0.0.1:<port>$REQ_PATH"
  echo "  targets: direct :$UPSTREAM_PORT, nginx :$NGINX_PORT, haproxy :$HAPROXY_PORT, router :$ROUTER_PORT (GOGC=$ROUTER_GOGC)"
  echo "  $ROUNDS round(s), target order rotated each round; warm-up $WARMUP per target first"
  echo "  note: wrk, the proxy and the upstream all share this machine's $(nproc) cores (no pinning);"
  echo "        the figures compare proxies under the same contention, not absolute capacity"
  echo "  CPU busy with other work just before the run: ${CPU_BUSY_BEFORE}%"
  warm_up
  measure
  summarize "$stamp"
}

main "$@"
