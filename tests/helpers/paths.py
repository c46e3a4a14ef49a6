"""Where the repository's own files are, for tests (never a path outside the repository, except SHARED, which
only tests marked shared_data read)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = ROOT / "tests" / "data"  # small real files copied into the repository (see tests/data/README)
DEMO = ROOT / "data" / "demo"
SHARED = ROOT.parent / "shared" / "data"
