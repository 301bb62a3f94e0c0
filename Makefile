# Switchyard. `make run` starts the whole stack locally; `make test` runs the
# unit and integration tests against real Consul and PostgreSQL.
GO      ?= go
BIN     := bin
# A count, not a duration: a -fuzztime duration races the coordinator's deadline
# against in-flight workers (golang/go#75804) and fails a loaded CI run with
# "context deadline exceeded" and no failing input.
FUZZTIME ?= 150000x

.PHONY: tools build run test lint soak fuzz bench bench-proxy bench-catalog bench-moves bench-placement bench-api vet clean

tools:
	@scripts/tools.sh

build:
	$(GO) build -o $(BIN)/switchyard ./cmd/switchyard

run: tools build
	$(BIN)/switchyard dev

vet:
	$(GO) vet ./...

# go vet (the fault injection build too), staticcheck and golangci-lint
# (.golangci.yml); the linters are pinned and built into bin/ by
# scripts/tools.sh. make test runs all of them first.
lint: tools vet
	$(GO) vet -tags faultinject ./cmd/switchyard
	$(BIN)/staticcheck ./...
	$(BIN)/golangci-lint run ./...

test: lint
	GO=$(GO) scripts/test.sh
	$(MAKE) fuzz

# The long variants of the scale-out fault scenarios (20 back-and-forth
# moves under load, histories checked for linearizability).
soak: tools
	SWITCHYARD_SOAK=1 $(GO) test -race -count=1 -v -timeout 30m -run '^TestScaleOut' ./test/integration/

# Tenant extraction (router), the fast path's request and response head parsers and its chunked
# relay (router/wire) differentially against net/http.
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzExtract$$' -fuzztime=$(FUZZTIME) ./router/
	for f in FuzzRequestHead FuzzResponseHead FuzzChunkedBody; do \
		$(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) ./router/wire/ || exit 1; \
	done

# Every benchmark, each printing its figures (the issue notes quote them).
bench: tools build bench-catalog bench-placement bench-moves bench-api bench-proxy

# Router lookup at 1M tenants (pure) and the catalog at 1M tenants in a real
# Consul: cold start, bytes per tenant, write → obeyed latency.
bench-catalog:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./catalog/
	$(GO) test -run='^$$' -bench='^BenchmarkCatalogMillion$$' -benchtime=1x -timeout 30m ./test/integration/

# Rebalance plan for 1M tenants over 100 pools.
bench-placement:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./placement/

# Copy rate vs a psql pipe, switch pause over 20 moves, capture overhead,
# moves and apply under storms up to the orders app's saturation.
bench-moves:
	$(GO) test -run='^$$' -bench='^Benchmark(CopyMillion|SwitchPause|CaptureOverhead|MoveUnderLoad|ApplyUnderStorm)$$' -benchtime=1x -timeout 30m ./test/integration/

# Tenant create and plan-change throughput through the control API.
bench-api:
	$(GO) test -run='^$$' -bench='^BenchmarkControlAPI$$' -benchtime=1x -timeout 10m ./test/integration/

bench-proxy:
	scripts/bench-proxy.sh
	scripts/bench-tls.sh

# TLS + HTTP/1.1, TLS + HTTP/2 and full handshakes against nginx (bench-tls.sh).
bench-tls:
	scripts/bench-tls.sh

clean:
	rm -rf $(BIN)/switchyard
