# Entry points. `make run` and `make test` work on a fresh Debian 12 machine: they install
# what is missing first (deploy/install-deps.sh), then build with CMake.
JOBS    ?= $(shell nproc)
BUILD   ?= build
ASAN    ?= build-asan
ARGS    ?=

.PHONY: all deps test-deps build asan run test test-fast bench clean format

all: build

deps:
	@deploy/install-deps.sh

test-deps:
	@deploy/install-deps.sh --test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, tests included.
asan: test-deps
	@cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DTW_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN) -j $(JOBS)

# Serve one node on 0.0.0.0:8080 with its log in ./data (the embedded defaults).
run: build
	$(BUILD)/bin/tidewire $(ARGS)

# Every test: unit and integration, on the optimised build and on the sanitizer build.
test: test-deps build asan
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600
	cd $(ASAN) && ctest --output-on-failure -j 2 --timeout 900

# Only the optimised build's tests (the quick loop while developing).
test-fast: test-deps build
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600

bench: build
	tests/bench/run.sh

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN)
