# Short commands over CMake (see README.md). Each target installs missing Debian packages first.
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
DEPS := scripts/install-deps
VENV := tools/reference/.venv
# The bench and test programs link k22core without k22's main, which sets this itself: libgomp's
# spinning default starves OpenBLAS's threads (see src/main.c).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: all deps build test asan fuzz cuda test-cuda demo fixtures conformance bench clean help

all: build

help:
	@echo "make            build k22 into build/ (CPU backend)"
	@echo "make test       build, then run every CPU test (plain build + ASan/UBSan build)"
	@echo "make demo       build, then synth, init, pack, train (mpirun -np 2), inspect, sample: tiny models, demo/"
	@echo "make cuda       build with the CUDA backend (sm_80, sm_90) into build-cuda/"
	@echo "make test-cuda  run the cuda-labelled tests (needs a GPU)"
	@echo "make asan       ASan + UBSan build in build-asan/, run every CPU test there"
	@echo "make fuzz       libFuzzer binaries (clang) in build-fuzz/; FUZZ_SECONDS=600 make fuzz runs them"
	@echo "make fixtures   rebuild tests/fixtures with the pinned PyTorch reference (venv)"
	@echo "make conformance  diffusers loads k22's folders and k22 loads diffusers' folders"

deps:
	@$(DEPS)

build: deps
	@cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >build.log 2>&1 || { cat build.log; exit 1; }
	@cmake --build build -j $(JOBS)

test: build
	@$(MAKE) --no-print-directory asan-build
	@cd build && ctest --output-on-failure -j $(JOBS) -LE cuda --timeout 900
	@cd build-asan && ctest --output-on-failure -j $(JOBS) -LE cuda --timeout 900

asan-build: deps
	@cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DK22_SANITIZE=ON >build-asan.log 2>&1 || { cat build-asan.log; exit 1; }
	@cmake --build build-asan -j $(JOBS)

asan: asan-build
	@cd build-asan && ctest --output-on-failure -j $(JOBS) -LE cuda

FUZZ_SECONDS ?= 0
fuzz: deps
	@cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DK22_SANITIZE=ON -DK22_FUZZ=ON >build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
	@cmake --build build-fuzz -j $(JOBS)
	@if [ "$(FUZZ_SECONDS)" != "0" ]; then scripts/run-fuzz build-fuzz $(FUZZ_SECONDS); fi

cuda: deps
	@command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "make cuda: nvcc not found; install the CUDA toolkit and put its bin/ on PATH" >&2; exit 1; }
	@cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DK22_CUDA=ON \
	  -DCMAKE_CUDA_COMPILER=$$(command -v nvcc || echo /usr/local/cuda/bin/nvcc) $(CMAKE_FLAGS) >build-cuda.log 2>&1 || { cat build-cuda.log; exit 1; }
	@cmake --build build-cuda -j $(JOBS)

test-cuda: cuda
	@cd build-cuda && K22_REQUIRE_CUDA=1 ctest --output-on-failure -L cuda

demo: build
	@scripts/demo

$(VENV)/.done: tools/reference/requirements.txt
	@scripts/install-deps
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tools/reference/requirements.txt
	@touch $@

fixtures: build $(VENV)/.done
	$(VENV)/bin/python tools/reference/make_fixtures.py --k22 build/k22 --out tests/fixtures

conformance: build $(VENV)/.done
	$(VENV)/bin/python tools/reference/conformance.py --k22 build/k22

# BENCH_ARGS go to bench/train_vs_torch.sh: empty = tiny models on the CPU; on a GPU machine
# `make bench BENCH_ARGS="--size full --device cuda"` (bench/NOTES.md: with the gpu-bundle build,
# run bench/train_vs_torch.sh there directly with --bin).
# PACK_BENCH_ARGS go to bench/pack_vs_torch.sh (the frozen encoders of `k22 pack`; it takes the same
# --size and --device, not --steps).
BENCH_ARGS ?=
PACK_BENCH_ARGS ?= $(BENCH_ARGS)
bench: build
	@build/bench_ops
	@build/bench_gemm_shapes --scale 16 --reps 5
	@bench/prior_step.sh
	@bench/decoder_step.sh
	@bench/train_vs_torch.sh $(BENCH_ARGS)
	@bench/pack_vs_torch.sh $(PACK_BENCH_ARGS)

clean:
	rm -rf build build-asan build-cuda build-fuzz build.log build-asan.log build-cuda.log build-fuzz.log
