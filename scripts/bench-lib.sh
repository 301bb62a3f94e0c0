# Shell helpers shared by the benchmark scripts (sourced, not run). The
# sourcing script sets BENCH_NAME (its name in log lines) first.

log() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "${BENCH_NAME:-bench}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ensure_commands CMD:PACKAGE...: apt-get install the packages whose command
# is missing, then check every command is there.
ensure_commands() {
  local missing=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]} (or install them yourself)"
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || die "${pair%%:*} still missing after apt-get install"; done
}

port_in_use() {
  [ -n "$(ss -Hltnu "( sport = :$1 )" 2>/dev/null)" ]
}

# free_port VAR: set VAR to a port free for TCP and UDP, below the ephemeral
# range, not yet handed out by this script.
ISSUED_PORTS=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    case "$ISSUED_PORTS" in *" $p "*) continue ;; esac
    port_in_use "$p" && continue
    ISSUED_PORTS+="$p "
    printf -v "$1" '%s' "$p"
    return 0
  done
  die "no free port found"
}

# wait_until SECONDS WHAT CMD...: poll CMD every 0.1s until it succeeds.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.1
  done
}

consul_has_leader() { [ -n "$(curl -sf --max-time 2 "http://127.0.0.1:$CONSUL_HTTP_PORT/v1/status/leader" | tr -d '"')" ]; }
