"""How much of everything to do; --quick shrinks the repeat counts and request counts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Plan:
    quick: bool
    large_mb: int = 200
    medium_mb: int = 20
    concurrent: int = 8
    concurrent_mb: int = 25
    small_size: int = 4096
    small_in_flight: int = 16
    files: tuple[int, ...] = (10_000, 100_000)  # the listed owner's files, one listing run each (--files)
    read_in_flight: int = 8
    repeats_large: int = 5
    repeats: int = 3
    small_count: int = 1000
    dedup_count: int = 500
    revalidations: int = 2000
    list_requests: int = 1000
    list_seconds: float = 6.0  # per listing/stats round, at most (and the requests still running then)
    list_repeats: int = 1  # 12 routes: one round each keeps a full run within its 10 minutes
    dedup_seconds: float = 16.0
    avatar_repeats: int = 3
    disk_test_mb: int = 1000
    tcp_test_mb: int = 1000
    hash_test_mib: int = 256
    deployment_mb: int = 200  # the GridFS vs local upload and download (bench/measure/deployment.py)
    deployment_files: int = 2000  # the listed owner's files for the 1 vs 2 workers GET files/
    # through the XEP-0363 component (bench/measure/component.py), one round each: slot requests,
    # 4 KiB PUTs on the first of those slots, 4 KiB uploads with their slot; plan.large_mb MB PUTs
    component_slots: int = 600
    component_uploads: int = 300
    component_large_repeats: int = 2

    @classmethod
    def make(cls, quick: bool, files: tuple[int, ...] | None = None) -> Plan:
        plan = cls._make(quick)
        if files:
            plan.files = files
        return plan

    @classmethod
    def _make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            files=(10_000,),
            repeats_large=3,
            repeats=1,
            small_count=300,
            dedup_count=200,
            revalidations=500,
            list_requests=300,
            list_seconds=3.0,
            list_repeats=1,
            dedup_seconds=6.0,
            avatar_repeats=1,
            disk_test_mb=256,
            tcp_test_mb=500,
            hash_test_mib=128,
            deployment_mb=50,
            component_slots=200,
            component_uploads=100,
            component_large_repeats=1,
        )
