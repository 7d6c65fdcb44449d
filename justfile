# Conveniences only: every recipe is one plain cargo command, usable without just.

# Serve the bundled plugins on the embedded default config.
serve *ARGS:
    cargo run -- serve {{ARGS}}

# The whole test suite (what CI runs after the lints).
test:
    cargo test --workspace --no-fail-fast

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Everything CI does.
ci:
    bash .ci/run

# Startup and per-request benchmarks, printed as ratios against in-run baselines.
bench:
    cargo bench --bench host

# Check a component against gantry's worlds.
check-plugin FILE:
    cargo run -- plugin check {{FILE}}
