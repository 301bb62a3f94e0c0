#!/usr/bin/env bash
# Installs what Switchyard needs on a fresh machine, offline but for the Go
# module proxy and Debian's packages. Idempotent: a second run is a no-op.
#   - bin/consul, built from the Go module proxy (about 6 minutes, then cached)
#   - PostgreSQL 15 server binaries (Debian "postgresql")
#   - Chromium (Debian "chromium") for the console's browser tests
#   - with the argument "lint": bin/staticcheck and bin/golangci-lint, built
#     from the Go module proxy at pinned versions (several minutes, then cached)
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
# Debian's Chromium, for the console's browser tests (test/integration/console_test.go).
if ! command -v chromium >/dev/null; then
  echo "tools: installing Chromium (the console's browser tests)"
  apt_install chromium
fi

have=""
if [ -x bin/consul ]; then have=$(bin/consul version 2>/dev/null || true); fi
if [[ "$have" != *"Consul ${CONSUL_VERSION}"* ]]; then
  echo "tools: building Consul ${CONSUL_VERSION} from the Go module proxy (takes several minutes, once)"
  dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/consul@${CONSUL_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "tools: could not download consul source" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  cp -r "$dir" "$work/consul"
  chmod -R u+w "$work/consul"
  (
    cd "$work/consul"
    for m in api sdk envoyextensions proto-public troubleshoot; do
      go mod edit -dropreplace="github.com/hashicorp/consul/$m"
    done
    GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o consul.bin .
  )
  mv "$work/consul/consul.bin" bin/consul
fi
v=$(bin/consul version); echo "${v%%$'\n'*}"

# Linters (make lint), each rebuilt only when its pinned version changes.
[ "${1:-}" = lint ] || exit 0
STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"
go_tool() { # go_tool <binary> <version> <module path of the command>
  local bin=$1 version=$2 pkg=$3 stamp="bin/.$1.version"
  if [ -x "bin/$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then return; fi
  echo "tools: building $bin $version from the Go module proxy (once)"
  GOBIN="$PWD/bin" GOFLAGS= go install "$pkg@$version"
  echo "$version" > "$stamp"
}
go_tool staticcheck "$STATICCHECK_VERSION" honnef.co/go/tools/cmd/staticcheck
go_tool golangci-lint "$GOLANGCI_LINT_VERSION" github.com/golangci/golangci-lint/v2/cmd/golangci-lint
echo "staticcheck $STATICCHECK_VERSION, golangci-lint $GOLANGCI_LINT_VERSION"
