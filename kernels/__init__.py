"""Compute kernels: micro-benchmarks, training, aggregation, codecs. The bottom layer."""
