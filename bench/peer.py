"""--peer prosody: Prosody's mod_http_file_share on the same machine, measured by the shared
peer script in a subprocess, after the service has stopped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT, progress
from bench.plan import Plan

PEER_SCRIPT = ROOT.parent / "shared" / "peers" / "prosody_file_share_bench.py"
DEFAULT_MB = 25  # the large file of the run with Prosody's default network settings


def unavailable(name: str) -> str | None:
    """Why the peer cannot run here, or None."""
    if name != "prosody":
        return f"unknown peer {name!r}"
    if not PEER_SCRIPT.exists():
        return f"peer script not found at {PEER_SCRIPT}"
    if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
        return "Prosody is not installed (apt-get install prosody)"
    check = subprocess.run([sys.executable, "-c", "import slixmpp, httpx"], check=False, capture_output=True)
    if check.returncode != 0:
        return f"{sys.executable} lacks slixmpp or httpx"
    return None


def run(name: str, tmp: Path, plan: Plan) -> dict:
    """The peer's figures: tuned (its 1 ms min_wait lifted), and with its defaults in a full run."""
    why = unavailable(name)
    if why is not None:
        return {"available": False, "why": why}
    results: dict[str, Any] = {"available": True, "script": str(PEER_SCRIPT)}
    # With its defaults Prosody streams a few MB/s: the default run's large file is DEFAULT_MB, not
    # the run's 200 MB (a minute of waiting for a figure the table only mentions).
    configs = [("tuned", plan.large_mb, ["--min-wait", "1e-6"])]
    if not plan.quick:
        configs.append(("default", min(plan.large_mb, DEFAULT_MB), []))
    for config, size_mb, extra in configs:
        results[config] = run_config(config, size_mb, extra, tmp)
    return results


def run_config(config: str, size_mb: int, extra: list[str], tmp: Path) -> dict:
    out = tmp / f"prosody-{config}.json"
    progress(f"peer: Prosody mod_http_file_share ({config} network settings), about 15 s")
    done = subprocess.run(
        [sys.executable, str(PEER_SCRIPT), "--out", str(out), "--size-mb", str(size_mb), *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp,
    )
    if done.returncode != 0 or not out.exists():
        progress(f"peer failed: {done.stderr[-800:]}")
        return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
    found = json.loads(out.read_text())
    large = found["large"]
    progress(f"peer {config}: PUT {large['put_mb_s']:.1f} MB/s, GET {large['get_mb_s']:.1f} MB/s")
    return found


def notes(found: dict) -> list[str]:
    """The lines under the table about the peer."""
    if not found:
        return ["Prosody: not run (add `--peer prosody`)."]
    if not found.get("available"):
        return [f"Prosody: not available: {found.get('why')}."]
    lines = []
    tuned = found.get("tuned", {})
    if "large" in tuned:
        lines.append(
            f"Prosody {tuned.get('prosody_version', '?')} mod_http_file_share, measured by "
            "`shared/peers/prosody_file_share_bench.py --min-wait 1e-6` in the same run (its 1 ms default "
            "`min_wait` caps uploads at a few MB/s; the column shows it without that cap)."
        )
    else:
        lines.append(f"Prosody (tuned) failed: {tuned.get('error', '?')[:300]}")
    default = found.get("default", {})
    if "large" in default:
        lines.append(
            f"With Prosody's default network settings: PUT {default['large']['put_mb_s']:.1f} MB/s "
            f"(a {default.get('size_mb', DEFAULT_MB)} MB file), "
            f"GET {default['large']['get_mb_s']:.1f} MB/s, 8 × 25 MB {default['concurrent']['aggregate_mb_s']:.1f} MB/s, "
            f"4 KiB PUTs {default['small']['uploads_per_s_slot_excluded']:.0f}/s."
        )
    return lines
