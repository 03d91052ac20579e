//! Shared helpers for the rthreads examples, benchmarks and cluster tests.
