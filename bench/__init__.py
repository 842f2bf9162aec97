"""gallery's benchmark: the service against this machine's limits and a peer, in one run.

    python -m bench [--quick] [--peer prosody] [--profile] [--only uploads,...] [--out-dir DIR]
    python bench/run.py ...          (the same)

It starts the service as a user would (`bench.server`), runs every measurement in
`bench.measure` (each sets up the users and files it needs, measures, and supplies its own
table rows), stops everything and writes bench/results/latest.json and latest.md
(`bench.report`). docs/performance.md explains the figures and the method.
"""
