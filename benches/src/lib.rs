//! Benchmarks live in `benches/benches/`; see `scripts/bench.sh`.
