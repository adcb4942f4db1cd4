"""Lightning callbacks of training (evaluation runs through :mod:`robustlab.evaluation`)."""

from robustlab.callbacks.coverage_profiler import CoverageProfiler

__all__ = ["CoverageProfiler"]
