"""Every performance target the project has set, in one table, each judged on one run's own
figures (its machine limits and its peer): met, not met, or not measured in this run.

`from` says where a target was set: issue 13 or 11 (by point) or earlier work (docs/performance.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench import machine
from bench.measure.listing import LABELS, LIST_KEYS, PERCENT_KEYS, STATS_KEYS
from bench.rows import Figures, fmt

TEN_K, HUNDRED_K = 10_000, 100_000
FULL_RUN_SECONDS = 600


@dataclass(frozen=True)
class Verdict:
    measured: str
    met: bool


Judge = Callable[[Figures], Verdict | None]  # None: not measured in this run


@dataclass(frozen=True)
class Target:
    name: str
    source: str
    judge: Judge


def median(figures: Figures, key: str, field: str) -> float | None:
    item = figures.get(key)
    return item.get(f"median_{field}") if item else None


def ratio_at_least(value: float | None, limit: float | None, factor: float, unit: str, limit_name: str) -> Verdict | None:
    if value is None or not limit:
        return None
    return Verdict(f"{fmt(value)} {unit} = {value / limit:.2f} × {limit_name} ({fmt(limit)})", value >= factor * limit)


def at_least(value: float | None, needed: float, unit: str) -> Verdict | None:
    return None if value is None else Verdict(f"{fmt(value)} {unit}", value >= needed)


def below(value: float | None, bound: float, unit: str) -> Verdict | None:
    return None if value is None else Verdict(f"{fmt(value)} {unit}", value < bound)


def md5_ratio(key: str, field: str) -> Judge:
    return lambda f: ratio_at_least(median(f, key, field), f.machine["md5_mb_s"], 0.5, "MB/s", "md5")


def peer_ratio(key: str, field: str, group: str, peer_field: str, factor: float, unit: str) -> Judge:
    return lambda f: ratio_at_least(median(f, key, field), f.peer_figure(group, peer_field), factor, unit, "Prosody")


def listing_figure(figures: Figures, files: int, key: str, field: str) -> float | None:
    item = figures.listing(files, key)
    return item.get(f"median_{field}") if item else None


def listing_rate(key: str, needed: float) -> Judge:
    return lambda f: at_least(listing_figure(f, TEN_K, key, "per_s"), needed, "requests/s")


def listing_p99(key: str, bound: float) -> Judge:
    return lambda f: below(listing_figure(f, TEN_K, key, "p99_ms"), bound, "ms")


def scales(key: str, factor: float = 1.5) -> Judge:
    """The rate at 100 000 files is at most `factor` times slower than at 10 000."""

    def judge(f: Figures) -> Verdict | None:
        small, large = listing_figure(f, TEN_K, key, "per_s"), listing_figure(f, HUNDRED_K, key, "per_s")
        if not small or not large:
            return None
        return Verdict(f"{fmt(large)} vs {fmt(small)} requests/s: {small / large:.2f} × slower", small / large <= factor)

    return judge


def bounded_commands(f: Figures) -> Verdict | None:
    """Database commands per request no higher at 100 000 files than at 10 000 (half a command of slack)."""
    growth = []
    for key in LIST_KEYS + STATS_KEYS + PERCENT_KEYS:
        small = listing_figure(f, TEN_K, key, "db_commands_per_request")
        large = listing_figure(f, HUNDRED_K, key, "db_commands_per_request")
        if small is not None and large is not None:
            growth.append((large - small, key, small, large))
    if not growth:
        return None
    worst, key, small, large = max(growth)
    return Verdict(f"most growth: {key} {small:.1f} → {large:.1f} commands per request", worst <= 0.5)


def cpu_per_gb(f: Figures) -> Verdict | None:
    floor = machine.hashing_s_per_gb(f.machine)
    value = median(f, "upload_large", "server_cpu_s_per_gb")
    return None if value is None else Verdict(f"{value:.2f} vs {floor:.2f} CPU s/GB: {value / floor:.2f} ×", value <= 1.5 * floor)


def memory_independent(f: Figures) -> Verdict | None:
    large, medium = f.get("upload_large"), f.get("upload_medium")
    if not large or not medium:
        return None
    diff = large["max_rss_peak_mib"] - medium["max_rss_peak_mib"]
    return Verdict(f"{diff:+.1f} MiB", abs(diff) <= 10)


def full_run(f: Figures) -> Verdict | None:
    if f.plan["quick"] or f.results.get("only"):
        return None
    seconds = f.results["run_seconds"]
    return Verdict(f"{seconds / 60:.1f} min", seconds < FULL_RUN_SECONDS)


def component_figure(figures: Figures, key: str, field: str) -> float | None:
    """A figure of the XEP-0363 component measurement (None when it was not measured)."""
    found = figures.get("component") or {}
    item = found.get(key) if found.get("available") else None
    return item.get(f"median_{field}") if item else None


def component_peer(key: str, field: str, peer_field: str) -> Judge:
    return lambda f: ratio_at_least(component_figure(f, key, field), f.peer_figure("small", peer_field), 1, "/s", "Prosody")


def listing_targets() -> tuple[Target, ...]:
    found: list[Target] = []
    for key in LIST_KEYS:
        label = LABELS[key].format(page="").replace("  ", " ").rstrip()
        found += [
            Target(f"{label}: ≥ 300/s at 10 000 files", "issue 13.3", listing_rate(key, 300)),
            Target(f"{label}: p99 < 50 ms at 10 000 files", "issue 13.3", listing_p99(key, 50)),
            Target(f"{label}: at 100 000 files within 1.5 × of 10 000", "issue 13.3", scales(key)),
        ]
    for key in STATS_KEYS:
        found += [
            Target(f"{LABELS[key]}: ≥ 500/s at 10 000 files", "issue 13.2", listing_rate(key, 500)),
            Target(f"{LABELS[key]}: at 100 000 files within 1.5 × of 10 000", "issue 13.2", scales(key)),
        ]
    for key in PERCENT_KEYS:  # "bounded the same way" as the listing
        found += [
            Target(f"{LABELS[key]}: ≥ 300/s at 10 000 files", "issue 13.3", listing_rate(key, 300)),
            Target(f"{LABELS[key]}: at 100 000 files within 1.5 × of 10 000", "issue 13.3", scales(key)),
        ]
    return (
        *found,
        Target(
            "database commands per request independent of the files (listing, stats, percent)", "issue 13.1", bounded_commands
        ),
    )


TARGETS: tuple[Target, ...] = (
    Target("upload 200 MB, one file: ≥ 0.5 × md5 on one core", "issue 13.6, earlier", md5_ratio("upload_large", "mb_s")),
    Target(
        "upload 200 MB, one file: ≥ 2 × Prosody", "earlier", peer_ratio("upload_large", "mb_s", "large", "put_mb_s", 2, "MB/s")
    ),
    Target("upload 8 × 25 MB at once: ≥ 0.5 × md5 on one core", "issue 13.6", md5_ratio("upload_concurrent", "aggregate_mb_s")),
    Target("server CPU per GB uploaded: within 1.5 × of md5 + sha256 + sha1", "issue 13.6", cpu_per_gb),
    Target(
        "RSS growth during 8 × 25 MB: < 50 MiB",
        "earlier",
        lambda f: below(median(f, "upload_concurrent", "rss_growth_mib"), 50, "MiB"),
    ),
    Target("peak RSS of a 200 MB upload within 10 MiB of a 20 MB one", "earlier", memory_independent),
    Target(
        "4 KiB uploads, 16 in flight: ≥ Prosody's 4 KiB PUTs/s",
        "issue 13.4",
        peer_ratio("upload_small", "per_s", "small", "uploads_per_s_slot_excluded", 1, "/s"),
    ),
    Target(
        "4 KiB uploads, 16 in flight: p99 < 100 ms", "issue 13.4", lambda f: below(median(f, "upload_small", "p99_ms"), 100, "ms")
    ),
    Target("4 KiB uploads, 16 in flight: ≥ 300/s", "earlier", lambda f: at_least(median(f, "upload_small", "per_s"), 300, "/s")),
    Target("slot dedup hits: ≥ 300/s", "issue 13.5", lambda f: at_least(median(f, "slot_dedup", "per_s"), 300, "/s")),
    Target(
        "download 200 MB: ≥ 0.6 × loopback TCP copy",
        "earlier",
        lambda f: ratio_at_least(median(f, "download_whole", "mb_s"), f.machine["loopback_tcp_mb_s"], 0.6, "MB/s", "loopback"),
    ),
    Target("download 200 MB: ≥ 2 × Prosody", "earlier", peer_ratio("download_whole", "mb_s", "large", "get_mb_s", 2, "MB/s")),
    Target(
        "XEP-0363 slot requests through the component, 16 in flight: ≥ Prosody's",
        "issue 11.10",
        component_peer("slots", "per_s", "slots_per_s"),
    ),
    Target(
        "4 KiB uploads through the component (slot + PUT), 16 in flight: ≥ Prosody's",
        "issue 11.10",
        component_peer("uploads", "per_s", "uploads_per_s_slot_included"),
    ),
    Target(
        "PUT 200 MB through the component: ≥ 0.5 × md5 on one core",
        "issue 11.10 (as 13.6)",
        lambda f: ratio_at_least(component_figure(f, "large", "mb_s"), f.machine["md5_mb_s"], 0.5, "MB/s", "md5"),
    ),
    *listing_targets(),
    Target("GET files/, page 1: ≥ 1000/s at 10 000 files", "earlier", listing_rate("list_first", 1000)),
    Target("GET files/stats/: ≥ 1000/s at 10 000 files", "earlier", listing_rate("stats", 1000)),
    Target("avatar from a 24 MP JPEG: ≤ 400 ms", "earlier", lambda f: below(median(f, "avatar_jpeg_24mp", "ms"), 400.001, "ms")),
    Target("full benchmark run: under 10 minutes", "issue 13.7", full_run),
)


def judge_all(figures: Figures) -> list[dict]:
    """Every target with its verdict: {"target", "from", "measured", "met"} (met None: not measured)."""
    found = []
    for target in TARGETS:
        verdict = target.judge(figures)
        measured, met = (verdict.measured, verdict.met) if verdict else ("not measured in this run", None)
        found.append({"target": target.name, "from": target.source, "measured": measured, "met": met})
    return found
