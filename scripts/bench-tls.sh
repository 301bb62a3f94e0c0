#!/usr/bin/env bash
# TLS benchmark: the Switchyard router's TLS listener against nginx with the
# same certificate (ECDSA P-256, made here with openssl) and the same TLS 1.3
# cipher (TLS_AES_128_GCM_SHA256, Go's choice on AES-capable CPUs; nginx is
# pinned to it), both proxying the same tiny upstream (test/bench/proxy/upstream):
#   1. TLS + HTTP/1.1: wrk (keep-alive)           throughput and p99
#   2. TLS + HTTP/2:   h2load (nghttp2-client)    throughput and mean latency
#                      (h2load reports min/max/mean/sd, no percentiles)
#   3. full handshakes per second: openssl s_time -new (no resumption),
#      PARALLEL clients at once, each connection closed after the handshake
# in interleaved rounds (router and nginx alternate who goes first), then a
# summary with ratios to nginx, also written as JSON to
# bench/results/tls-<timestamp>.json.
# Goal (issue 14): >= 0.9x nginx throughput, p99 <= 1.2x nginx's.
# wrk/h2load, both proxies and the upstream share the machine's cores: on a
# busy machine the figures compare the two under the same contention only.
#
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [10] (seconds)  CONNECTIONS [64]  THREADS [2]
#   H2_CLIENTS [16]  H2_STREAMS [10]  PARALLEL [2]  ROUTER_GOGC [400]
# Needs nginx, wrk, h2load and openssl: installed from Debian if missing
# (root). Not part of `make test`.
# Quick check: ROUNDS=1 DURATION=3 scripts/bench-tls.sh
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
H2_CLIENTS="${H2_CLIENTS:-16}"
H2_STREAMS="${H2_STREAMS:-10}"
PARALLEL="${PARALLEL:-2}"
ROUTER_GOGC="${ROUTER_GOGC:-400}"

# Apart from bench-proxy.sh's ports, so both can be run on one machine (not at once).
UPSTREAM_PORT=18180
NGINX_TLS_PORT=18543
ROUTER_PORT=18190
ROUTER_ADMIN_PORT=18191
ROUTER_TLS_PORT=18544
REQ_PATH="/t/bench/orders"

WORK=""
PIDS=()

BENCH_NAME=bench-tls
. "$REPO_ROOT/scripts/bench-lib.sh"

cleanup() {
  local status=$? i
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do wait "${PIDS[i]}" 2>/dev/null || true; done
  if [ -n "$WORK" ]; then
    if [ "$status" != 0 ]; then
      for f in "$WORK"/*.log; do [ -s "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
      log "logs kept in $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  log "started $name (pid $!)"
}

ok_https() { [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$@")" = 200 ]; }

make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test,DNS:*.bench.test" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
}

start_stack() {
  local serf_lan serf_wan server
  go build -o bin/switchyard ./cmd/switchyard
  go build -o "$WORK/bin/" ./test/bench/proxy/upstream ./test/bench/proxy/seed
  start upstream "$WORK/bin/upstream" -listen "127.0.0.1:$UPSTREAM_PORT"
  free_port CONSUL_HTTP_PORT; free_port serf_lan; free_port serf_wan; free_port server
  start consul bin/consul agent -dev -node bench-tls -bind 127.0.0.1 -client 127.0.0.1 \
    -http-port "$CONSUL_HTTP_PORT" -https-port -1 -dns-port -1 -grpc-port -1 -grpc-tls-port -1 \
    -serf-lan-port "$serf_lan" -serf-wan-port "$serf_wan" -server-port "$server" \
    -log-level warn -hcl 'disable_update_check = true'
  wait_until 30 "a Consul leader" consul_has_leader
  "$WORK/bin/seed" -consul "127.0.0.1:$CONSUL_HTTP_PORT" -upstream-port "$UPSTREAM_PORT" \
    -cert "$WORK/cert.pem" -key "$WORK/key.pem" >&2
  start router env GOGC="$ROUTER_GOGC" bin/switchyard router \
    -listen "127.0.0.1:$ROUTER_PORT" -admin "127.0.0.1:$ROUTER_ADMIN_PORT" -tls-listen "127.0.0.1:$ROUTER_TLS_PORT" \
    -consul "127.0.0.1:$CONSUL_HTTP_PORT" -path-prefix=true -log-level warn
  mkdir -p "$WORK/nginx/logs"
  cat >"$WORK/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  # nginx ends a connection after 1,000 requests by default (HTTP/1.1 and
  # HTTP/2); the router does not. h2load does not reconnect, so that cap
  # alone would bound nginx's h2 figure at clients x 1,000 / duration.
  keepalive_requests 10000000;
  upstream backend { server 127.0.0.1:$UPSTREAM_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_TLS_PORT ssl http2; # nginx 1.22 (Debian 12): no "http2 on"
    http2_max_concurrent_streams 128;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
  start nginx nginx -c "$WORK/nginx.conf" -p "$WORK/nginx/"
  for port in "$ROUTER_TLS_PORT" "$NGINX_TLS_PORT"; do
    wait_until 30 "a 200 over TLS on :$port" ok_https "https://127.0.0.1:$port$REQ_PATH"
    wait_until 10 "a 200 over h2 on :$port" ok_https --http2 "https://127.0.0.1:$port$REQ_PATH"
  done
}

cipher_of() { # the negotiated protocol and cipher
  echo | openssl s_client -connect "127.0.0.1:$1" -servername bench.test 2>/dev/null | awk '/^New,/{print $2, $NF; exit}'
}

# wrk_run PORT -> "rps p99_ms"
wrk_run() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "https://127.0.0.1:$1$REQ_PATH")
  echo "$out" >>"$WORK/wrk.log"
  awk '/Requests\/sec:/ {rps=$2}
       /^ +99%/ {v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
                 if (u=="us") v/=1000; else if (u=="s") v*=1000; p99=v}
       END {printf "%.0f %.2f\n", rps, p99}' <<<"$out"
}

# h2_run PORT -> "rps mean_ms"
h2_run() {
  local out
  out=$(h2load -c "$H2_CLIENTS" -m "$H2_STREAMS" -t "$THREADS" -D "$DURATION" "https://127.0.0.1:$1$REQ_PATH")
  echo "$out" >>"$WORK/h2load.log"
  grep -q "status codes: [1-9][0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx" <<<"$out" || die "h2load against :$1 saw errors: $(grep 'status codes' <<<"$out")"
  awk '/^finished in/ {rps=$4}
       /^time for request:/ {v=$6; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
                             if (u=="us") v/=1000; else if (u=="s") v*=1000; mean=v}
       END {printf "%.0f %.2f\n", rps, mean}' <<<"$out"
}

# hs_run PORT -> full handshakes per second over PARALLEL s_time clients
hs_run() {
  local i total=0 n
  for i in $(seq "$PARALLEL"); do
    openssl s_time -connect "127.0.0.1:$1" -new -time "$DURATION" >"$WORK/stime-$i.out" 2>&1 &
  done
  wait
  for i in $(seq "$PARALLEL"); do
    n=$(awk '/connections in [0-9]+ real seconds/ {print $1; exit}' "$WORK/stime-$i.out")
    total=$((total + ${n:-0}))
  done
  echo "$((total / DURATION))"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

main() {
  scripts/tools.sh >&2
  ensure_commands nginx:nginx-light wrk:wrk h2load:nghttp2-client openssl:openssl
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-tls.XXXXXX")
  local stamp r who port
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  make_cert
  start_stack
  declare -A PORT=([router]=$ROUTER_TLS_PORT [nginx]=$NGINX_TLS_PORT)
  echo "Switchyard TLS benchmark, $stamp; $(nproc) cores shared by everything (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "  router TLS: $(cipher_of "$ROUTER_TLS_PORT"); nginx: $(cipher_of "$NGINX_TLS_PORT")"
  for who in router nginx; do wrk_run "${PORT[$who]}" >/dev/null; done # warm-up
  for ((r = 1; r <= ROUNDS; r++)); do
    local order=(router nginx)
    [ $((r % 2)) = 0 ] && order=(nginx router)
    for who in "${order[@]}"; do
      port=${PORT[$who]}
      read -r h1 p99 < <(wrk_run "$port")
      read -r h2 mean < <(h2_run "$port")
      hs=$(hs_run "$port")
      echo "round $r $who: TLS+h1 ${h1} req/s p99 ${p99} ms | TLS+h2 ${h2} req/s mean ${mean} ms | ${hs} full handshakes/s"
      echo "$who $h1 $p99 $h2 $mean $hs" >>"$WORK/results"
    done
  done
  local -A med
  for who in router nginx; do
    for col in 2 3 4 5 6; do
      med[$who.$col]=$(awk -v w="$who" -v c="$col" '$1 == w {print $c}' "$WORK/results" | median)
    done
  done
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }
  echo
  echo "medians over $ROUNDS round(s)      router      nginx   router/nginx"
  printf "TLS+HTTP/1.1 req/s        %10s %10s   %s (goal >= 0.9)\n" "${med[router.2]}" "${med[nginx.2]}" "$(ratio "${med[router.2]}" "${med[nginx.2]}")"
  printf "TLS+HTTP/1.1 p99 ms       %10s %10s   %s (goal <= 1.2)\n" "${med[router.3]}" "${med[nginx.3]}" "$(ratio "${med[router.3]}" "${med[nginx.3]}")"
  printf "TLS+HTTP/2 req/s          %10s %10s   %s (goal >= 0.9)\n" "${med[router.4]}" "${med[nginx.4]}" "$(ratio "${med[router.4]}" "${med[nginx.4]}")"
  printf "TLS+HTTP/2 mean ms        %10s %10s   %s\n" "${med[router.5]}" "${med[nginx.5]}" "$(ratio "${med[router.5]}" "${med[nginx.5]}")"
  printf "full handshakes/s         %10s %10s   %s\n" "${med[router.6]}" "${med[nginx.6]}" "$(ratio "${med[router.6]}" "${med[nginx.6]}")"
  mkdir -p bench/results
  local out="bench/results/tls-$stamp.json"
  printf '{"stamp":"%s","git_commit":"%s","cores":%s,"loadavg_end":"%s","rounds":%s,"duration_s":%s,"wrk":"-t%s -c%s","h2load":"-c%s -m%s -t%s","s_time_parallel":%s,' \
    "$stamp" "$(git rev-parse --short HEAD)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$ROUNDS" "$DURATION" "$THREADS" "$CONNECTIONS" "$H2_CLIENTS" "$H2_STREAMS" "$THREADS" "$PARALLEL" >"$out"
  printf '"router":{"h1_rps":%s,"h1_p99_ms":%s,"h2_rps":%s,"h2_mean_ms":%s,"handshakes_per_s":%s},' "${med[router.2]}" "${med[router.3]}" "${med[router.4]}" "${med[router.5]}" "${med[router.6]}" >>"$out"
  printf '"nginx":{"h1_rps":%s,"h1_p99_ms":%s,"h2_rps":%s,"h2_mean_ms":%s,"handshakes_per_s":%s}}\n' "${med[nginx.2]}" "${med[nginx.3]}" "${med[nginx.4]}" "${med[nginx.5]}" "${med[nginx.6]}" >>"$out"
  echo "JSON summary: $out"
}

main "$@"
