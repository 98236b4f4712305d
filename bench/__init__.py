"""Benchmarks: each prints the project's figure beside its baseline measured in the same run."""
