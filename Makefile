# Switchyard. `make run` starts the whole stack locally; `make test` runs the
# unit and integration tests against real Consul and PostgreSQL.
GO      ?= go
BIN     := bin
FUZZTIME ?= 15s

.PHONY: tools build run test test-unit fuzz bench bench-proxy bench-catalog vet clean

tools:
	@scripts/tools.sh

build:
	$(GO) build -o $(BIN)/switchyard ./cmd/switchyard

run: tools build
	$(BIN)/switchyard dev

vet:
	$(GO) vet ./...

test: tools
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzExtract$$' -fuzztime=$(FUZZTIME) ./router/

bench: tools build bench-catalog bench-proxy

bench-catalog:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 -timeout 30m ./catalog/ ./router/

bench-proxy:
	scripts/bench-proxy.sh

clean:
	rm -rf $(BIN)/switchyard
