"""Benchmarks whose tables go to docs/benchmarks/ (each module has a `main(argv) -> int`)."""
