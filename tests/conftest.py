"""Shared test helpers: tests run on the CPU, one device, float32."""

import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = Path(__file__).resolve().parents[1]
# experiments/ holds the PyTorch reference and the CLI scripts the tests import or run.
sys.path.insert(0, str(ROOT / "experiments"))

# Property tests draw the same examples on every run: CI results don't depend on luck.
from hypothesis import settings  # noqa: E402

settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.load_profile("deterministic")
