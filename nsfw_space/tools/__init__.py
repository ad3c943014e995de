"""Benchmarks, the load test and synthetic test models: used by the CLI and the tests only."""
