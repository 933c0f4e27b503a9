"""Benchmarks of scsc against its peers; run each as a module from the repository root, one at a time
(``python -m benchmarks.quality``, ``python -m benchmarks.report``, ``bash benchmarks/timing.sh``)."""
