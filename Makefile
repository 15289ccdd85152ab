# coro9p: the two commands a new machine needs are `make run` and `make test`.
CARGO ?= cargo

.PHONY: all build run test test-deps lint fmt bench qtest qemu-dropin docs fuzz clean

all: build

build:
	$(CARGO) build --release --workspace

# Serves DIR (default: ./export, created if missing) on 127.0.0.1:PORT and
# prints the Linux mount command. SECURITY_MODEL=none keeps working for a
# user who is not root (ownership changes are ignored, as QEMU's "none").
DIR ?= $(CURDIR)/export
PORT ?= 5640
SECURITY_MODEL ?= none
run: build
	@mkdir -p "$(DIR)"
	@echo "coro9p: serving $(DIR) on 127.0.0.1:$(PORT) (Ctrl-C stops it)"
	./target/release/coro9p --fsdev local,path="$(DIR)",security_model=$(SECURITY_MODEL) \
		--listen tcp:127.0.0.1:$(PORT)

# Style and lints first (cheap), then what the tests need installed (QEMU
# as the parity oracle, built once), then every unit, integration and doc
# test.
test: lint test-deps
	$(CARGO) test --workspace
	$(MAKE) --no-print-directory qemu-dropin
	$(MAKE) --no-print-directory vm-test

# The Linux kernel's 9P client mounts coro9p, QEMU's virtio-9p, diod and
# QEMU with coro9p inside (a second guest) and runs one workload on each
# (tests/vm/, docs/vm-test.md). Installs what it needs; about 10 minutes on
# 2 cores.
.PHONY: vm-test
vm-test:
	CARGO="$(CARGO)" VM_DROPIN="$$(bash qemu-dropin/build.sh | tail -n 1)/qemu-system-x86_64" \
		bash tests/vm/run.sh

# QEMU built from Debian's source with coro9p in place of hw/9pfs
# (qemu-dropin/, docs/qemu-dropin.md); QEMU's own qos-test runs its
# virtio-9p cases against it and against Debian's binary, side by side.
# The first build takes about 5 minutes on 2 cores, then it is cached.
qemu-dropin: test-deps
	CARGO="$(CARGO)" bash qemu-dropin/run.sh

test-deps:
	bash qtest-compat/scripts/test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# QEMU's qos-test virtio-9p cases: against coro9p (every case, slow ones
# included, with both client buffer sizes), against Debian's QEMU 7.2, and
# compared reply by reply between the two.
qtest: test-deps
	$(CARGO) build --workspace
	./target/debug/qos-test -m slow
	./target/debug/qos-test -m slow --max-size 4096
	./target/debug/qos-test -m slow --target ffi
	./target/debug/qos-test -m slow --max-size 4096 --target qemu
	./target/debug/qos-test -m slow --max-size 4096 --compare

# Medians, never timed tests: benches/ (the runtime) and bench/ (9P
# workloads against diod and the direct syscall loop; see docs/perf.md).
bench:
	@mkdir -p docs/perf
	bash -o pipefail -c '$(CARGO) bench --bench runtime | tee docs/perf/runtime.txt'
	CARGO='$(CARGO)' bash bench/scripts/make-bench.sh

# libFuzzer on the decoder and on whole sessions (synth, local), each for
# FUZZ_SECONDS (60); new corpus entries and crashes land in tests/fuzz/,
# which make test replays.
fuzz:
	bash fuzz/run.sh

# Redraws docs/img/*.svg from real traced runs.
docs:
	$(CARGO) build --release
	bash docs/tools/make-pictures.sh

clean:
	$(CARGO) clean
