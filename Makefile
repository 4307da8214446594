# Thin wrapper over CMake presets. `make train` and `make test` install missing Debian
# packages first (scripts/setup.sh), so both work on a fresh Debian 12 machine as root.
BUILD   := build
JOBS    ?= $(shell nproc)
PYTHON  ?= /usr/bin/python3
LT      := $(BUILD)/leasetrain
DATA    := data/fortunes
RUN     ?= runs/tiny

.PHONY: all setup configure build test train data bench clean

all: build

setup:
	@bash scripts/setup.sh

configure: setup
	@cmake --preset default >/dev/null

build: configure
	@cmake --build --preset default -j $(JOBS)

test: build
	@ctest --preset default -j $(JOBS)

# The default job: the tiny GPT-2 on English text from Debian's fortunes package.
data: build
	@bash scripts/prepare-fortunes.sh $(LT) $(DATA)

train: data
	@$(LT) train --config configs/tiny.toml --out $(RUN)
	@$(LT) sample --checkpoint $(RUN) --prompt "The meaning of life is" --tokens 200

bench: build
	@$(LT) bench step --device cpu

clean:
	rm -rf $(BUILD)
