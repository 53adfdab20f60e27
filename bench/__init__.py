"""Benchmarks: boot analysis and the throughput model."""
