"""What every part of the benchmark shares: paths, units, progress lines and its one error."""

from __future__ import annotations

import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MB = 1_000_000
MIB = 1 << 20
REQUEST_TIMEOUT = 300
STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[bench {time.perf_counter() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass
