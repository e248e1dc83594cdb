"""Benchmarks: each ``bench_*.py`` module defines ``main() -> None`` and prints ratios."""
