# Thin wrapper over CMake presets. `make train` and `make test` install missing Debian
# packages first (scripts/setup.sh), so both work on a fresh Debian 12 machine as root.
BUILD   := build
JOBS    ?= $(shell nproc)
PYTHON  ?= /usr/bin/python3
LT      := $(BUILD)/leasetrain
DATA    := data/fortunes
RUN     ?= runs/tiny

.PHONY: all setup configure build test check-sanitize fuzz train data bench clean

all: build

setup:
	@bash scripts/setup.sh

configure: setup
	@cmake --preset default >/dev/null

build: configure
	@cmake --build --preset default -j $(JOBS)

test: build
	@ctest --preset default -j $(JOBS)

# The `cpu` tests again in an ASan + UBSan build (GCC, CUDA and MPI off) in build-sanitize.
# One is left out (CMakePresets.json): LeasedTraining.CheckpointsAndStopsBeforeTheDeadline
# starts 2 ranks under mpirun, which a build without MPI refuses; `make test` runs it.
# ASAN_OPTIONS=allocator_may_return_null=1 there: an impossible allocation throws
# std::bad_alloc as in the normal build (what the size checks' tests expect), not an ASan abort.
CCACHE  := $(if $(shell command -v ccache),-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
check-sanitize: setup
	@cmake --preset sanitize $(CCACHE) >/dev/null
	@cmake --build --preset sanitize -j $(JOBS)
	@ctest --preset sanitize -j $(JOBS)

# libFuzzer targets for the untrusted-input readers (tests/fuzz), built with clang in
# build-fuzz and run FUZZ_SECONDS each; findings go to build-fuzz/artifacts/.
FUZZ_SECONDS ?= 60
fuzz:
	@bash scripts/setup.sh --fuzz
	@cmake --preset fuzz $(CCACHE) >/dev/null
	@cmake --build --preset fuzz -j $(JOBS)
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh build-fuzz

# The default job: the tiny GPT-2 on English text from Debian's fortunes package.
data: build
	@bash scripts/prepare-fortunes.sh $(LT) $(DATA)

# `make train` is a 2-rank data-parallel job on this host (CPU backend, MPI, one OpenMP thread
# per rank): --oversubscribe where there are fewer cores than ranks, --allow-run-as-root as
# root, no core binding (each rank's communication thread runs beside its compute thread).
NP      ?= 2
MPIRUN  := mpirun -np $(NP) --bind-to none -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 \
           $(if $(filter 0,$(shell id -u)),--allow-run-as-root) \
           $(if $(shell [ $(NP) -gt $$(nproc) ] && echo y),--oversubscribe)

train: data
	@$(MPIRUN) $(LT) train --config configs/tiny.toml --out $(RUN)
	@$(LT) sample --checkpoint $(RUN) --prompt "The meaning of life is" --tokens 200

bench: build
	@bash scripts/setup.sh --bench
	@$(LT) bench step --device cpu --torch

clean:
	rm -rf $(BUILD) build-sanitize build-fuzz
