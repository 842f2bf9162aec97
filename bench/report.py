"""The report: latest.json (every sample) and latest.md (the table), from the results of a run.

Each measurement module supplies its own rows (`rows(figures)`, and `memory_rows(figures)` for
the memory rows, which the table shows together after the speed rows); the machine's limits
come last. Below it, every target (bench/targets.py), met or not."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench import machine, peer, targets
from bench.measure import MEASUREMENTS
from bench.rows import Figures, Row, fmt


def build_rows(results: dict) -> list[Row]:
    """The table's rows, for whatever measurements the run made (--only may skip some)."""
    figures = Figures.of(results)
    rows: list[Row] = []
    for module in MEASUREMENTS:
        rows += module.rows(figures)
    for module in MEASUREMENTS:
        rows += module.memory_rows(figures)
    return rows + machine.rows(figures)


def header(results: dict) -> str:
    m = results["machine"]
    loads = "".join(f", {load:.2f} before {name}" for name, load in results.get("load_average_before", {}).items())
    return (
        f"gallery benchmark, {results['date']}, {'quick' if results['plan']['quick'] else 'full'} run in "
        f"{results['run_seconds']:.0f} s: {m['cpus']} CPUs ({results['cpu_model']}), Python {results['python']}, "
        f"tornado {results['tornado']}, 1-minute load average {m['load_average_1m']:.2f} before the run"
        f"{loads}; medians of repeated runs (MB = 10^6 bytes). Command: `{results['command']}`."
    )


def table_line(row: Row) -> str:
    ratio = f"{row.value / row.limit:.2f}" if row.value is not None and row.limit else ""
    peer_ratio = ""
    if row.value is not None and row.peer:
        share = row.value / row.peer
        peer_ratio = f"{share:.1f}×" if share >= 0.095 else f"{share:.2f}×"  # 0.047 is not 0.0×
    note = f" ({row.note})" if row.note else ""
    commands = "" if row.commands is None else f"{row.commands:.1f}"
    return (
        f"| {row.name}{note} | {fmt(row.value)} | {row.unit} | {row.limit_name} | {fmt(row.limit)} | {ratio} | "
        f"{fmt(row.peer)} | {peer_ratio} | {commands} |"
    )


def targets_table(judged: list[dict]) -> list[str]:
    met = sum(1 for t in judged if t["met"])
    judged_count = sum(1 for t in judged if t["met"] is not None)
    lines = [
        f"Targets: {met} of {judged_count} measured in this run met ({len(judged) - judged_count} not measured).",
        "",
        "| target | from | measured | met |",
        "|---|---|---|:---:|",
    ]
    words = {True: "yes", False: "**no**", None: "–"}
    return lines + [f"| {t['target']} | {t['from']} | {t['measured']} | {words[t['met']]} |" for t in judged]


def markdown(results: dict) -> str:
    lines = [
        header(results),
        "",
        "| measurement | gallery | unit | machine limit (same run) | limit | gallery ÷ limit "
        "| Prosody | gallery ÷ Prosody | DB commands per request |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [table_line(row) for row in build_rows(results)]
    lines += ["", *targets_table(results["targets"])]
    lines += ["", *peer.notes(results.get("peer", {})), ""]
    lines.append(
        "The client is a separate process (raw asyncio sockets, sendfile for upload bodies, downloads read into one "
        "reused buffer); its CPU per GB is in latest.json beside the server's. The embedded database (SecantusDB, "
        "pure Python) is a third process on the same 2 cores."
    )
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def write(results: dict, out_dir: Path) -> str:
    """latest.json and latest.md into `out_dir` (the targets judged into both); returns the markdown."""
    results["targets"] = targets.judge_all(Figures.of(results))
    write_atomic(out_dir / "latest.json", json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(results)
    write_atomic(out_dir / "latest.md", table)
    return table
