# fleetgate — the two commands of the README are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(HOME)/.cargo/bin:$(PATH)
LISTEN ?= 127.0.0.1:8080
DB ?= ./fleetgate.db

.PHONY: run test setup setup-test pkg lint test-rust test-pg bench-replicas test-wasm test-node test-workerd test-edge test-browser test-sync test-package docs bench bench-edge bench-wasm bench-boundary bench-server clean

## run: the server with the demo world and the dashboard on http://$(LISTEN)
run: setup pkg
	cargo build --release -p fleetgate-server
	./target/release/fleetgate-server --demo --listen $(LISTEN) --db $(DB)

## test: every check and test suite (installs what is missing)
test: setup-test lint test-rust test-pg pkg test-wasm test-node test-workerd test-edge test-browser test-sync test-package
	@echo "fleetgate: all test suites passed"

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --browser

pkg:
	scripts/build-pkg.sh
	@mkdir -p node_modules && ln -sfn ../pkg node_modules/fleetgate

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test-rust:
	cargo test --workspace

## test-pg: replicas over a throwaway PostgreSQL (scripts/postgres.sh installs and starts it as
## an unprivileged user, stops it at the end): the replica suite (racing commands, streams,
## kill -9, a database restart), then the whole HTTP and attack suites against PostgreSQL
test-pg:
	scripts/postgres.sh sh -c 'cargo test -p fleetgate-server --test replicas -- --include-ignored --test-threads=1 && \
	  FLEETGATE_SOAK_SECONDS=5 cargo test -p fleetgate-server --test http --test attack'

test-wasm:
	wasm-pack test --node -- -p fleetgate --test wasm_boundary

test-node:
	tsc -p tests/ts/tsconfig.json
	node --test tests/js/

test-workerd:
	node --test tests/workerd/

## test-edge: the edge worker in real workerd, against an origin stub and the real server
test-edge:
	cargo build -p fleetgate-server -p fleetgate-cli
	node --test --test-concurrency=1 tests/edge/

test-browser:
	cargo build -p fleetgate-server
	node --test --test-concurrency=1 tests/browser/

## test-sync: fleetgate/sync against the real server (random commands, a restart, a forced 410)
test-sync:
	cargo build -p fleetgate-server
	node --test --test-concurrency=1 tests/sync/

## test-package: the packed tarball installed into tests/fixtures (Node ESM/CJS, TypeScript,
## Vite build and dev server, webpack 5 and a React app in Chromium, workerd), publint, attw,
## the package README's code blocks, and TypeDoc without warnings
test-package:
	cargo build -p fleetgate-server
	node --test --test-concurrency=1 tests/package/

## docs: the package's API docs (TypeDoc over pkg/*.d.ts, typedoc.json) into target/docs
docs: pkg
	typedoc

# bench: the native engine (criterion), then the wasm package against the hand-written JS index.
bench: setup pkg
	cargo bench --bench engine
	node bench/wasm.mjs

bench-edge: pkg
	cargo build --release -p fleetgate-server -p fleetgate-cli
	FLEETGATE_SERVER=target/release/fleetgate-server node bench/edge.mjs

bench-wasm: setup pkg
	node bench/wasm.mjs

# Object-shaped values at the boundary; FLEETGATE_ALT=path/to/other/pkg times a second build too.
bench-boundary: pkg
	node bench/boundary.mjs

clean:
	cargo clean
	rm -rf pkg node_modules/fleetgate

## bench-replicas: durable commands/s with 1, 2, 3 replicas on PostgreSQL against SQLite in one
## process, and fan-out latency between replicas (a throwaway PostgreSQL, see test-pg)
bench-replicas:
	cargo build --release -p fleetgate-server --bin fleetgate-server --example replicas
	scripts/postgres.sh cargo run --release -p fleetgate-server --example replicas

bench-server:
	cargo build --release -p fleetgate-server --bin fleetgate-server --example load
	cargo run --release -p fleetgate-server --example load
