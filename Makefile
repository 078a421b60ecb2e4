# wingold — every target works on a fresh Debian 12 machine.
CARGO ?= cargo
BIN := target/release/wingold
DEMO_DIR ?= target/demo

.PHONY: setup build test demo bench lint man fuzz clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release

test: lint
	@CARGO="$(CARGO)" scripts/test.sh

demo: build
	@scripts/demo.sh "$(BIN)" "$(DEMO_DIR)"

bench: setup
	$(CARGO) bench --bench image_read
	$(CARGO) bench --bench ntfs_rewrite
	$(CARGO) bench --bench inject
	$(CARGO) bench --bench replay
	$(CARGO) bench --bench clone
	$(CARGO) bench --bench fetch
	$(CARGO) bench --bench finalize
	$(CARGO) bench --bench build
	$(CARGO) bench --bench drivers
	$(CARGO) bench --bench copy_in
	$(CARGO) bench --bench publish

# Each fuzz target for FUZZ_SECONDS (default 60); findings go to tests/fixtures/fuzz.
fuzz: setup
	@CARGO="$(CARGO)" scripts/fuzz.sh

man: build
	@scripts/man.sh "$(BIN)" target/man

lint: setup
	@CARGO="$(CARGO)" scripts/lint.sh

clean:
	$(CARGO) clean
