"""Benchmarks of issue #8: what fedssl costs (device time, bandwidth, server memory) and what it learns.

Every figure is a ratio against a reference measured in the same run. One command runs them all:
``python -m bench.run [--quick] [--only NAME] [--results-dir DIR]`` (see bench/README.md).
"""
