#!/usr/bin/env bash
# Installs what Switchyard needs on a fresh machine, offline but for the Go
# module proxy and Debian's packages. Idempotent: a second run is a no-op.
#   - bin/consul, built from the Go module proxy (about 6 minutes, then cached)
#   - PostgreSQL 15 server binaries (Debian "postgresql")
#   - bin/weed (SeaweedFS, S3 server for the backup tests), from the Go module
#     proxy at a pinned version (several minutes, then cached)
#   - Chromium (Debian "chromium") for the console's browser tests
#   - h2load (Debian "nghttp2-client") for the edge's HTTP/2 tests
#   - bin/staticcheck and bin/golangci-lint, built from the Go module proxy at
#     pinned versions (about 2 minutes, then cached)
set -euo pipefail
cd "$(dirname "$0")/.."
CONSUL_VERSION="${CONSUL_VERSION:-v1.20.1}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
mkdir -p bin

apt_updated=""
apt_install() {
  if [ "$(id -u)" != 0 ]; then echo "tools: need root to apt-get install $*" >&2; return 1; fi
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/postgres" ]; then
  echo "tools: installing PostgreSQL 15 server"
  apt_install postgresql postgresql-contrib
fi
if ! command -v psql >/dev/null; then apt_install postgresql-client; fi
if ! command -v curl >/dev/null; then apt_install curl; fi # the TLS and HTTP/2 tests drive the real curl
command -v h2load >/dev/null || apt_install nghttp2-client # h2load, against the TLS listener in test/integration/edge_domains_test.go
# Debian's Chromium, for the console's browser tests (test/integration/console_test.go).
if ! command -v chromium >/dev/null; then
  echo "tools: installing Chromium (the console's browser tests)"
  apt_install chromium
fi

# The Go-built servers and tools are built side by side (each build's
# downloads and link overlap the other's compile), once, then cached in bin/.
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# from_proxy <module@version> <dir name>: a writable copy of a module's source.
from_proxy() {
  local dir
  dir=$(GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "tools: could not download $1" >&2; return 1; }
  cp -r "$dir" "$work/$2" && chmod -R u+w "$work/$2"
}

build_consul() {
  local have=""
  if [ -x bin/consul ]; then have=$(bin/consul version 2>/dev/null || true); fi
  [[ "$have" == *"Consul ${CONSUL_VERSION}"* ]] && return 0
  echo "tools: building Consul ${CONSUL_VERSION} from the Go module proxy (takes several minutes, once)"
  from_proxy "github.com/hashicorp/consul@${CONSUL_VERSION}" consul || return 1
  (
    cd "$work/consul"
    for m in api sdk envoyextensions proto-public troubleshoot; do
      go mod edit -dropreplace="github.com/hashicorp/consul/$m"
    done
    GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o consul.bin .
  ) && mv "$work/consul/consul.bin" bin/consul
}

# bin/weed: SeaweedFS, a real S3-compatible object store for the backup tests,
# built from the Go module proxy at a pinned pseudo-version.
WEED_VERSION="${WEED_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
build_weed() {
  [ -x bin/weed ] && [ "$(cat bin/.weed.version 2>/dev/null)" = "$WEED_VERSION" ] && return 0
  echo "tools: building SeaweedFS ${WEED_VERSION} from the Go module proxy (takes several minutes, once)"
  from_proxy "github.com/seaweedfs/seaweedfs@${WEED_VERSION}" seaweedfs || return 1
  (cd "$work/seaweedfs" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o weed.bin ./weed) &&
    mv "$work/seaweedfs/weed.bin" bin/weed && echo "$WEED_VERSION" > bin/.weed.version
}

# go_tool <binary> <version> <module path of the command>: a pinned tool,
# rebuilt only when its version changes.
go_tool() {
  local bin=$1 version=$2 pkg=$3 stamp="bin/.$1.version"
  if [ -x "bin/$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then return; fi
  echo "tools: building $bin $version from the Go module proxy (once)"
  GOBIN="$PWD/bin" GOFLAGS= go install "$pkg@$version" && echo "$version" > "$stamp"
}
STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"

pids=()
build_consul & pids+=($!)
build_weed & pids+=($!)
# Both linters are part of make test (golangci-lint: about 2 min to build
# on 2 idle cores, 1.5 min to run cold).
go_tool staticcheck "$STATICCHECK_VERSION" honnef.co/go/tools/cmd/staticcheck & pids+=($!)
go_tool golangci-lint "$GOLANGCI_LINT_VERSION" github.com/golangci/golangci-lint/v2/cmd/golangci-lint & pids+=($!)
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || { echo "tools: a build failed" >&2; exit 1; }
v=$(bin/consul version); echo "${v%%$'\n'*}"
echo "weed $(cat bin/.weed.version), staticcheck $STATICCHECK_VERSION, golangci-lint $GOLANGCI_LINT_VERSION"
