# The two commands a new user needs: `make demo` and `make test`. Both install what is missing.
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps build build-asan test test-unit test-bpf test-integration bench demo clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)
	cmake --build $(BUILD) -j$(JOBS)

build-asan: deps
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DAPIWARDEN_SANITIZE=ON -DAPIWARDEN_BUILD_BENCH=OFF $(CMAKE_ARGS)
	cmake --build $(BUILD_ASAN) -j$(JOBS) --target apiwarden_unit_tests

# Every test: unit tests under ASan+UBSan, then everything (unit, BPF, integration) on the release build.
test: build build-asan
	cd $(BUILD_ASAN) && ctest -L unit --output-on-failure -j$(JOBS)
	cd $(BUILD) && ctest --output-on-failure

test-unit: build
	cd $(BUILD) && ctest -L unit --output-on-failure -j$(JOBS)

test-bpf: build
	cd $(BUILD) && ctest -L bpf --output-on-failure

test-integration: build
	cd $(BUILD) && ctest -L integration --output-on-failure

bench: build
	bash bench/run-all.sh $(BUILD)

demo: build
	bash scripts/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
