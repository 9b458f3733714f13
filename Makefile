# Entry points. `make run` and `make test` work on a fresh Debian 12 machine: they install
# what is missing first (deploy/install-deps.sh), then build with CMake.
JOBS    ?= $(shell nproc)
BUILD   ?= build
ASAN    ?= build-asan
FUZZ    ?= build-fuzz
# Seconds each libFuzzer driver runs: a smoke run in `make test`, longer with `make fuzz`.
FUZZ_SECONDS ?= 15
FUZZ_LONG ?= 300
# make soak: the chaos checker runs this long against a 3-node cluster
SOAK_SECONDS ?= 600
ARGS    ?=

.PHONY: all deps test-deps js-deps build asan fuzz-build run test test-fast fuzz bench bench-node bench-peers bench-cluster soak clean format

all: build

deps:
	@deploy/install-deps.sh

test-deps:
	@deploy/install-deps.sh --test

# The JavaScript client's dev dependencies (its tests: ws, playwright-core, esbuild, React)
# from the committed package-lock.json, again only when the lock file changed.
JS_DIR  = client-sdk/js
js-deps: test-deps
	@cd $(JS_DIR) && { [ node_modules/.tw-npm-ci -nt package-lock.json ] || \
		{ npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.tw-npm-ci; }; }

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, tests included.
asan: test-deps
	@cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DTW_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN) -j $(JOBS)

# libFuzzer drivers (clang, with ASan+UBSan) for every parser: HTTP, WebSocket, both codecs.
fuzz-build: test-deps
	@CC=clang cmake -S . -B $(FUZZ) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTW_FUZZ=ON \
		-DTW_FUZZ_SECONDS=$(FUZZ_SECONDS) >/dev/null
	@cmake --build $(FUZZ) -j $(JOBS) --target fuzzers

# Serve one node on 0.0.0.0:8080 with its log in ./data (the embedded defaults).
run: build
	$(BUILD)/bin/tidewire $(ARGS)

# Every test: unit, integration, JavaScript and browser (client-sdk/js) on the optimised build
# and on the sanitizer build, then a short run of each fuzz driver.
test: test-deps js-deps build asan fuzz-build
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600
	cd $(ASAN) && ctest --output-on-failure -j 2 --timeout 900
	cd $(FUZZ) && ctest --output-on-failure -j 2 -L fuzz

# The fuzz drivers for longer: FUZZ_LONG=600 make fuzz
fuzz: FUZZ_SECONDS = $(FUZZ_LONG)
fuzz: fuzz-build
	cd $(FUZZ) && ctest --output-on-failure -j 2 -L fuzz

# Only the optimised build's tests (the quick loop while developing).
test-fast: test-deps js-deps build
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600

# Every benchmark of docs/benchmarks.md: the log and the node alone, then against the peers.
bench: bench-node bench-peers

bench-node: build
	tests/bench/run.sh

# tidewire against nats-server (WebSocket, JetStream file storage) and Socket.IO 4 on Node:
# the peers' packages (install-deps.sh --bench), the Socket.IO server's npm packages from
# the committed lock file, then 3 repeats of 5 s per case; the table and the plot go into
# docs/benchmarks.md (tests/bench/peers/run.sh).
PEERS_SIO = tests/bench/peers/socketio
bench-peers: build
	@deploy/install-deps.sh --bench
	@cd $(PEERS_SIO) && { [ node_modules/.tw-npm-ci -nt package-lock.json ] || \
		{ npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.tw-npm-ci; }; }
	TW_BUILD=$(BUILD) tests/bench/peers/run.sh 3 5

# The log's crash-safety test for longer: SIGKILL in the middle of heavy publishing, then
# check every acknowledged event, SOAK_CYCLES times (make test runs 20).
SOAK_CYCLES ?= 200
# Cluster figures (cross-node latency, catch-up rate, kill -9 failover): docs/benchmarks.md.
bench-cluster: build
	/usr/bin/python3 tests/bench/cluster_bench.py --bin $(BUILD)/bin/tidewire --cli $(BUILD)/bin/tidewire-cli

soak: build
	mkdir -p $(BUILD)/tmp
	SOAK_CYCLES=$(SOAK_CYCLES) TIDEWIRE_BIN=$(CURDIR)/$(BUILD)/bin/tidewire \
		TW_TEST_TMP=$(CURDIR)/$(BUILD)/tmp /usr/bin/python3 -m pytest -q -p no:cacheprovider \
		tests/integration/test_store_crash.py
	TW_TEST_TMP=$(CURDIR)/$(BUILD)/tmp /usr/bin/python3 tests/chaos/checker.py \
		--bin $(CURDIR)/$(BUILD)/bin/tidewire --seconds $(SOAK_SECONDS) --settle 120

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN) $(FUZZ)
