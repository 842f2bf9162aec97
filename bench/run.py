#!/usr/bin/env python3
"""`python bench/run.py [options]`: the same as `python -m bench [options]` (see bench/__init__.py)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    ROOT = Path(__file__).resolve().parent.parent
    # run as a script, Python puts bench/ first on the path; the package needs the checkout instead
    sys.path[0] = str(ROOT)
    from bench.cli import main

    sys.exit(main(prog="python bench/run.py"))
