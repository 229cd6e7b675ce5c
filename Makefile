# Thin wrapper over CMake so that a fresh Debian 12 machine needs two commands:
#   make demo   -- install dependencies, build, run the main job on the embedded defaults
#   make test   -- install dependencies, build, run the test suite (ctest)
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build test demo clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >$(BUILD).cmake.log 2>&1 || (cat $(BUILD).cmake.log; exit 1)
	@grep -A8 'she configuration:' $(BUILD).cmake.log
	@cmake --build $(BUILD) -j$(JOBS)

# GPU tests first, verbosely, so a machine without a device shows why they skip; then all.
test: build
	@cd $(BUILD) && (ctest -L gpu -V 2>&1 | grep -E '^[0-9]+: skipped:' || true)
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)/she

clean:
	rm -rf $(BUILD) $(BUILD).cmake.log
