"""Throughput measurement shared by the benchmark scripts."""

import time


def rate(fn, batch, warmup=3, min_seconds=4.0, min_repeats=5):
    """Images per second of ``fn()`` processing ``batch`` images: after ``warmup`` calls, repeated for at least
    ``min_repeats`` calls and ``min_seconds``."""
    for _ in range(warmup):
        fn()
    repeats, start = 0, time.perf_counter()
    while repeats < min_repeats or time.perf_counter() - start < min_seconds:
        fn()
        repeats += 1
    return repeats * batch / (time.perf_counter() - start)
