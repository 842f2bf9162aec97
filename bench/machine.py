"""This machine's limits, measured in the same run as the service (see bench/limits.py), and
their rows at the end of the table."""

from __future__ import annotations

import os
from pathlib import Path

from bench import limits
from bench.common import MB, MIB, progress
from bench.plan import Plan
from bench.rows import Figures, Row

HASHES = ("md5", "sha256", "sha1")
LIMIT_TRIES = 3  # a limit is the best of this many tries: what the machine can do, not what it did once
ROWS = (
    ("machine: md5, one core", "md5_mb_s", "MB/s"),
    ("machine: sha256, one core", "sha256_mb_s", "MB/s"),
    ("machine: sha1, one core", "sha1_mb_s", "MB/s"),
    ("machine: sequential write + fsync, storage dir", "disk_write_mb_s", "MB/s"),
    ("machine: 4 KiB write + fsync + rename + dir fsync", "durable_small_writes_per_s", "per s"),
    ("machine: loopback TCP copy (asyncio → sink process)", "loopback_tcp_mb_s", "MB/s"),
)


def measure(plan: Plan, storage: Path) -> dict:
    """md5, sha256, sha1 (the digests every upload gets), disk write + fsync and durable 4 KiB
    writes in `storage`, loopback TCP."""
    storage.mkdir(parents=True, exist_ok=True)
    progress("machine limits: md5, sha256, sha1, disk write + fsync, durable 4 KiB writes, loopback TCP")
    md5, sha256, sha1 = (max(limits.hash_mb_s(name, plan.hash_test_mib * MIB) for _ in range(LIMIT_TRIES)) for name in HASHES)
    found = {
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "md5_mb_s": md5,
        "sha256_mb_s": sha256,
        "md5_plus_sha256_mb_s": 1 / (1 / md5 + 1 / sha256),
        "sha1_mb_s": sha1,
        "disk_write_mb_s": limits.disk_write_mb_s(storage, plan.disk_test_mb * MB),
        "durable_small_writes_per_s": limits.durable_small_writes_per_s(storage, 2.0 if not plan.quick else 1.0),
        "loopback_tcp_mb_s": max(limits.loopback_tcp_mb_s(plan.tcp_test_mb * MB) for _ in range(LIMIT_TRIES)),
    }
    progress("machine: " + ", ".join(f"{k} {v:.1f}" for k, v in found.items() if isinstance(v, float)))
    return found


def hashing_s_per_gb(found: dict) -> float:
    """CPU seconds to compute every digest an upload gets over 1 GB, on one core."""
    return sum(1000 / found[f"{name}_mb_s"] for name in HASHES if f"{name}_mb_s" in found)


def rows(figures: Figures) -> list[Row]:
    return [Row(label, figures.machine[key], unit) for label, key, unit in ROWS if key in figures.machine]
