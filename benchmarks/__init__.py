"""deepfast benchmark suites (pytest-benchmark); run them with benchmarks/run.py."""
