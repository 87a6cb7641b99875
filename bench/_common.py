"""What every benchmark suite shares: the result record and the measuring loop."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: A suite's targets: scenario name -> (metric, bound); "p50_us" is an upper bound, any other
#: metric (e.g. "per_sec") a lower bound.
Targets = dict[str, tuple[str, float]]


@dataclass
class Result:
    name: str
    n: int
    p50_us: float
    p99_us: float
    per_sec: float
    ratio_to_floor: float | None = None


def measure(name: str, op: Callable[[], Any], n: int, warmup: int = 200) -> Result:
    for _ in range(warmup):
        op()
    samples = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        op()
        samples.append(time.perf_counter_ns() - t0)
    elapsed = time.perf_counter() - start
    samples.sort()
    return Result(
        name=name,
        n=n,
        p50_us=statistics.median(samples) / 1000,
        p99_us=samples[int(len(samples) * 0.99) - 1] / 1000,
        per_sec=n / elapsed,
    )
