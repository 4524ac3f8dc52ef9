"""Metric writers: one JSON line per record, plus TensorBoard when tensorboardX is installed."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from jaxbasics.train.files import write_atomic

log = logging.getLogger(__name__)


class MetricWriter:
    """Append ``{"step": ..., **metrics}`` lines to ``workdir/<name>.jsonl``.

    Also writes TensorBoard scalars under ``workdir/tensorboard/<name>`` if
    tensorboardX is installed (``pip install -e '.[tensorboard]'``).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> w = MetricWriter(d, "metrics", tensorboard=False)
    >>> w.write(1, {"loss": 0.5}); w.write(2, {"loss": 0.25})
    >>> w.rewind_to(1)  # one record set aside
    1
    >>> [r["step"] for r in read_jsonl(f"{d}/metrics.jsonl")]
    [1]
    >>> [r["step"] for r in read_jsonl(f"{d}/metrics.jsonl.rewound-1")]
    [2]
    """

    def __init__(
        self, workdir: str | Path, name: str, *, tensorboard: bool = True, enabled: bool = True
    ):
        self.path = Path(workdir) / f"{name}.jsonl"
        self.enabled = enabled  # False on all but one process of a multi-process run
        self._tb = None
        if tensorboard and enabled:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                pass
            else:
                self._tb = SummaryWriter(str(Path(workdir) / "tensorboard" / name))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one record and flush it to disk."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": int(step), **metrics}) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(k, v, int(step))
            self._tb.flush()

    def rewind_to(self, step: int) -> int:
        """Set aside the records past ``step`` (work a resumed run is about to redo).

        Nothing is deleted: the records past ``step`` are appended to
        ``<name>.jsonl.rewound-<step>`` (flushed to disk first), then the log is replaced,
        atomically, by the records up to ``step``.

        Returns:
          How many records were set aside.
        """
        if not self.enabled or not self.path.exists():
            return 0
        lines = self.path.read_text().splitlines(keepends=True)
        keep, later = [], []
        for line in lines:
            try:
                past = json.loads(line)["step"] > step
            except (json.JSONDecodeError, KeyError, TypeError):
                past = True  # a torn or foreign line: set aside, not lost
            (later if past else keep).append(line if line.endswith("\n") else line + "\n")
        if not later:
            return 0
        side = self.path.with_name(f"{self.path.name}.rewound-{int(step)}")
        with side.open("a") as f:
            f.writelines(later)
            f.flush()
            os.fsync(f.fileno())
        write_atomic(self.path, "".join(keep))
        return len(later)

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (killed mid-write) is skipped."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def open_writers(
    workdir: Path, is_main: bool, step: int, logs: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The run's metric writers by name (``metrics``, ``eval`` and ``logs``, which keep no
    TensorBoard scalars), their records past ``step`` set aside (work to be redone)."""
    writers = {name: MetricWriter(workdir, name, enabled=is_main) for name in ("metrics", "eval")}
    for name in logs:
        writers[name] = MetricWriter(workdir, name, tensorboard=False, enabled=is_main)
    for name, w in writers.items():
        if n := w.rewind_to(step):
            log.info("set aside %d %s records past step %d in %s", n, name, step, w.path.name)
    return writers
