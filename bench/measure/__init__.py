"""One module per measurement, in the order a run makes them. Each has

- `NAME`: what `--only` calls it;
- `async def measure(session) -> dict`: sets up the users and files it needs (bench.session,
  bench.fixtures), measures, and returns its results (keys of latest.json);
- `def rows(figures) -> list[Row]` and `def memory_rows(figures) -> list[Row]`: its rows of the
  table (the memory rows are shown together, after every speed row), from whatever results the
  run has (none when `--only` skipped it).
"""

from __future__ import annotations

from bench.measure import avatars, component, concurrent, dedup, deployment, downloads, listing, small, uploads

MEASUREMENTS = (uploads, concurrent, small, dedup, downloads, listing, avatars, component, deployment)
BY_NAME = {module.NAME: module for module in MEASUREMENTS}
