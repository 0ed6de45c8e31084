"""Benchmarks of hpcgan: throughput, scaling, allreduce, projection, plots (see benchmarks/common.py).

A package so that `python -m benchmarks.allreduce ...` works from the repo root and
`hpcgan bench ...` can import the modules (it puts the repo root on sys.path).
"""
