MAKEFLAGS += --no-print-directory

# tailcut: a thin wrapper over CMake. `make` builds a release tree in build/; `make test` also
# builds a sanitizer tree in build-asan/ and runs every test in both.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
RUN_ARGS   ?=
SOURCES     = $(shell git ls-files -co --exclude-standard -- '*.c' '*.h' 2>/dev/null)

.PHONY: all deps build asan run test check-format format bench clean

all: build

deps:
	@scripts/install-deps

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan:
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTC_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: deps build
	@scripts/run-demo $(BUILD)/tailcut $(RUN_ARGS)

check-format:
	@clang-format --dry-run -Werror $(SOURCES)
	@echo "format: ok"

format:
	@clang-format -i $(SOURCES)

test: deps check-format build asan
	@echo "== release tree"
	@cd $(BUILD) && ctest --output-on-failure
	@echo "== sanitizer tree (ASan + UBSan + LSan)"
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest --output-on-failure

bench: build
	@scripts/install-deps --bench
	@bench/run-all $(BUILD)/tailcut

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
