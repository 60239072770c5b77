MAKEFLAGS += --no-print-directory

# tailcut: a thin wrapper over CMake. `make` builds a release tree in build/; `make test` also
# builds a sanitizer tree in build-asan/ and runs every test in both.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
RUN_ARGS   ?=
# Tests run two at a time: every timing assertion has generous bounds, and the suite was
# checked under that load (and under extra CPU hogs).
TEST_JOBS  ?= 2
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_MERGE   ?= 0
FUZZ_TARGETS ?= server url json scenario response config
LINT_BUILD   ?= build-lint
LINT_SOURCES  = $(wildcard src/*/*.c app/*/*.c)
SOURCES     = $(shell git ls-files -co --exclude-standard -- '*.c' '*.h' 2>/dev/null)

PREFIX     ?= /usr/local
DESTDIR    ?=

.PHONY: all deps build asan run install man test check-format format lint bench fuzz screenshot clean

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

# Installs the release tree into PREFIX (DESTDIR=DIR stages it there): the program, both
# libraries, the headers, tailcut.pc, the CMake package and the man pages (docs/install.md).
install: build
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

# docs/man/tailcut-CMD.1: the OPTIONS list of each page written from CMD's settings table
# (scripts/man-options, `tailcut --man-options CMD`); the man-page test fails while a page differs.
man: build
	@scripts/man-options $(BUILD)/tailcut

check-format:
	@clang-format --dry-run -Werror $(SOURCES)
	@echo "format: ok"

format:
	@clang-format -i $(SOURCES)

# The include rule of the layers (scripts/check-layers, docs/internals/layout.md), then clang-tidy
# (.clang-tidy: the analyzer and bug-prone checks, warnings are errors) and cppcheck over the
# library (src/base included) and the program (tests and examples are not linted); any finding
# fails.
# clang-tidy reads the compile commands of a Debug tree that is only configured, never built.
lint: deps
	@scripts/check-layers
	@cmake -S . -B $(LINT_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
		>/dev/null
	@printf '%s\n' $(LINT_SOURCES) | xargs -P $(JOBS) -n 1 clang-tidy -p $(LINT_BUILD) --quiet \
		--extra-arg=-Wno-unknown-warning-option
	@cppcheck --enable=warning,portability --inline-suppr --quiet --error-exitcode=1 \
		-I include -I src --suppress=missingIncludeSystem src app
	@echo "lint: ok"

test: deps check-format lint build asan
	@echo "== release tree"
	@cd $(BUILD) && ctest -j $(TEST_JOBS) --output-on-failure
	@echo "== sanitizer tree (ASan + UBSan + LSan)"
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest -j $(TEST_JOBS) --output-on-failure

# docs/dashboard.png: the dashboard's browser test with its traffic spread over 45 s (a brownout in
# the middle), whose screenshot (taken in the build tree, so `make test` never touches docs/)
# is copied over.
screenshot: deps build
	@TAILCUT_BIN=$(BUILD)/tailcut TC_DASHBOARD_SECONDS=45 python3 tests/integration/serve/test_dashboard_browser.py
	@cp $(BUILD)/dashboard.png docs/dashboard.png
	@echo "docs/dashboard.png: refreshed"

bench: build
	@scripts/install-deps --bench
	@bench/run-all $(BUILD)/tailcut

# libFuzzer (clang tree with TC_FUZZ=ON): each target for FUZZ_SECONDS, one at a time; FUZZ_MERGE=1
# merges new interesting inputs into fuzz/corpus/. Warnings are gcc's job (the other trees), so a
# clang-only warning does not stop fuzzing. See fuzz/README.md.
fuzz: deps
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DTC_FUZZ=ON -DTC_WERROR=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS))
	@fuzz/run $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_MERGE) $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(LINT_BUILD)
