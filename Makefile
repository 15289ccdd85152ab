# coro9p: the two commands a new machine needs are `make run` and `make test`.
CARGO ?= cargo

.PHONY: all build run test lint fmt bench clean

all: build

build:
	$(CARGO) build --release --workspace

# Serves nothing yet: the server core comes with issue #3.
run: build
	./target/release/coro9p

# Style and lints first (cheap), then every unit, integration and doc test.
test: lint
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Medians, never timed tests: see benches/ for what is measured.
bench:
	$(CARGO) bench --bench runtime

clean:
	$(CARGO) clean
