"""Percentiles, medians and the summary of repeated samples that every result carries."""

from __future__ import annotations

import statistics

MAX_KEYS = ("rss_peak_mib", "rss_growth_mib", "p99_ms")


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median_of(samples: list[dict], key: str) -> float:
    return statistics.median(sample[key] for sample in samples)


def summary(samples: list[dict]) -> dict:
    """`median_<key>` of every numeric key of the samples, and `max_<key>` of the memory peaks and p99."""
    keys = [k for k, v in samples[0].items() if isinstance(v, (int, float))]
    out = {f"median_{k}": median_of(samples, k) for k in keys}
    for k in MAX_KEYS:
        if k in samples[0]:
            out[f"max_{k}"] = max(s[k] for s in samples)
    return out


def with_summary(samples: list[dict], **extra: object) -> dict:
    """A result: its samples and their summary (`extra` keys first, as the report expects)."""
    return {**extra, "samples": samples, **summary(samples)}
