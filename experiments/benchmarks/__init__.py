"""The parts of ``experiments/benchmark.py``, one per thing measured, and their shared timing."""
