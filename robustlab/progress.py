"""Progress of a long evaluation, reported from inside a batch: attacks and evaluations call :func:`step` in
their loops; the evaluation loop owns the one active :class:`Progress` (rank zero only)."""

import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tqdm.auto import tqdm

_active: "Progress | None" = None
#: The share of the current task that the running code stands for (nested :func:`part` blocks narrow it).
_window = [0.0, 1.0]


def step(done: int, total: int) -> None:
    """Inside an attack or evaluation: ``done`` of ``total`` units of the current work are finished."""
    if _active is not None:
        lo, hi = _window
        _active.advance(lo + (hi - lo) * (min(done / total, 1.0) if total else 1.0))


@contextmanager
def part(index: int, count: int) -> Iterator[None]:
    """The block is part ``index`` (from 0) of ``count`` equal parts of the current work: :func:`step` calls
    inside it (an attack's iterations, say) advance only that part."""
    lo, hi = _window
    width = (hi - lo) / max(count, 1)
    _window[:] = [lo + index * width, lo + (index + 1) * width]
    try:
        yield
    finally:
        _window[:] = [lo, hi]
        if _active is not None:
            _active.advance(lo + (index + 1) * width)


def clock(seconds: float) -> str:
    """``seconds`` as ``MmSSs``, or ``HhMMm`` from an hour up."""
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Progress over ``batches`` batches, each running ``tasks`` (attacks, then evaluations) in turn. The share
    done weighs each task by its mean time in the batches so far (equally in the first), plus the share of its
    steps done in the current batch (:func:`step`); the time left is extrapolated from it.

    In a terminal: one live bar. Otherwise (a log file): a line when a task has finished its last batch, a line
    at most every ``every`` seconds in between, and a final line, without control characters."""

    def __init__(self, batches: int, tasks: Sequence[str], enabled: bool = True, stream=None, every: float = 60.0):
        self.batches, self.tasks = max(int(batches), 1), list(tasks)
        self.enabled, self.stream, self.every = enabled and bool(self.tasks), stream or sys.stderr, every
        self.spent = {t: 0.0 for t in self.tasks}
        self.batch, self.task, self.fraction = 0, None, 0.0
        self.start = self.last_line = time.perf_counter()
        self.task_start = self.start
        self.terminal = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        size = shutil.get_terminal_size(fallback=(100, 24))  # a pseudo-terminal may report 0 x 0
        width, height = size.columns or 100, size.lines or 24
        self.bar = (
            tqdm(
                total=100.0,
                desc="evaluating",
                file=self.stream,
                ncols=width,
                nrows=height,
                leave=True,
                bar_format="{desc} |{bar}| {percentage:3.0f}% {elapsed}",
            )
            if self.terminal
            else None
        )

    def _weights(self) -> dict[str, float]:
        if self.batch == 0 or not any(self.spent.values()):
            return {t: 1.0 for t in self.tasks}
        return {t: max(self.spent[t], 1e-9) for t in self.tasks}

    def done(self) -> float:
        """The share of the whole run finished, in [0, 1]."""
        weights = self._weights()
        total = sum(weights.values())
        within = 0.0
        if self.task is not None:
            position = self.tasks.index(self.task)
            within = (sum(weights[t] for t in self.tasks[:position]) + weights[self.task] * self.fraction) / total
        return min((self.batch + within) / self.batches, 1.0)

    def left(self) -> float | None:
        done, elapsed = self.done(), time.perf_counter() - self.start
        return elapsed * (1 - done) / done if done > 0 else None

    @contextmanager
    def running(self, task: str) -> Iterator[None]:
        """The block runs ``task`` on the current batch."""
        global _active
        self.task, self.fraction, self.task_start = task, 0.0, time.perf_counter()
        _active = self if self.enabled else None
        _window[:] = [0.0, 1.0]
        try:
            yield
        finally:
            _active = None
            self.spent[task] += time.perf_counter() - self.task_start
            self.fraction = 1.0
            self._show()
            if self.enabled and not self.terminal and self.batch == self.batches - 1:
                self._line(f"{task}: {self.batches} batch(es), {self.spent[task]:.1f}s")

    def advance(self, fraction: float) -> None:
        """The current task is ``fraction`` done."""
        self.fraction = fraction
        self._show()

    def next_batch(self) -> None:
        self.batch, self.task, self.fraction = self.batch + 1, None, 0.0
        self._show()

    def _status(self) -> str:
        left = self.left()
        task = f" {self.task}" if self.task else ""
        return f"batch {min(self.batch + 1, self.batches)}/{self.batches}{task}" + (
            f", {clock(left)} left" if left is not None else ""
        )

    def _show(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(f"evaluating {self._status()}", refresh=False)
            self.bar.update(100.0 * self.done() - self.bar.n)
        elif time.perf_counter() - self.last_line >= self.every:
            self._line(f"progress: {100 * self.done():.0f}%, {self._status()}")

    def _line(self, text: str) -> None:
        self.last_line = time.perf_counter()
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(100.0 - self.bar.n)
            self.bar.close()
        elif self.enabled:
            self._line(f"evaluated {self.batches} batch(es) in {clock(time.perf_counter() - self.start)}")
