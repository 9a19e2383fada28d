"""What a trial reports: MLflow from rank 0 (through an outbox that survives a server outage), Tune the rest.

Runs in the in-process trial or in each Ray Train worker; ``send`` is ``tune.report`` or ``ray.train.report``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import storage, tracking
from ..errors import M2DError
from ..evaluate.grid import summarize
from ..tracking import Key, Tag


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker of one trial needs to report: its MLflow run, its output folder, how many ranks there are."""

    tracking_uri: str
    run_id: str
    out_dir: str
    world_size: int = 1


class Reporter:
    """``Hooks.report``: MLflow from rank 0, then Tune/Train gets flat summary numbers (and the checkpoint).

    Every rank calls ``send`` for every report, since Ray Train's report is a barrier across workers.

    Rank 0's MLflow writes survive a tracking server outage: each report's metrics (stamped when reported) and
    the final artifacts go to an outbox, sent oldest first. While the server is unreachable, a report only adds
    to it (one warning line; a new attempt at most every 1-30 s, backing off) and training goes on; the final
    report waits for the server up to ``$M2D_TRACKING_WAIT_S`` (default 300 s), then fails the trial. A batch
    whose answer was lost is re-sent with its original timestamps, which SQL stores skip as duplicates.
    """

    def __init__(self, rank: int, setup: WorkerSetup, send: Callable[[dict, Path | None], None]):
        self.rank, self.setup, self.send = rank, setup, send
        self.started = time.perf_counter()
        self._mlf = None
        self._metrics: list = []  # mlflow Metric objects not logged yet, oldest first
        self._files: list[tracking.Upload] = []  # artifacts and images not uploaded yet, oldest first
        self._down_since: float | None = None  # first failure of the current outage
        self._retry_at, self._delay = 0.0, 1.0

    @property
    def mlf(self):
        if self._mlf is None:
            self._mlf = tracking.client(self.setup.tracking_uri)
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # no line per HTTP retry
        return self._mlf

    def __call__(self, metrics: dict, checkpoint: Path | None) -> None:
        step = int(metrics["step"])
        scalars = {k: v for k, v in metrics.items()
                   if k not in ("grid", "final", "step", "steps") and isinstance(v, (int, float))
                   and not isinstance(v, bool)}
        grid = metrics.get("grid")
        summaries = summarize(grid, flat=True) if grid is not None else {}
        final = bool(metrics.get("final"))
        if final:
            scalars[Key.LOOP_S] = time.perf_counter() - self.started
        if self.rank == 0:
            cells = tracking.cell_metrics(grid) if grid is not None else {}
            self._metrics += tracking.metric_entities({**scalars, **cells, **summaries}, step)
            out = Path(self.setup.out_dir)
            if grid is not None:  # every evaluation: a trial stopped early (ASHA) still has its latest grid
                new = tracking.grid_uploads(out, grid, step)
                # staged files are rewritten in place: a still pending upload of an older copy is dropped
                files = {(u.path, u.folder) for u in new if u.key is None}
                self._files = [u for u in self._files if u.key is not None or (u.path, u.folder) not in files] + new
            self.flush(wait=final)
            if final and grid is not None:
                (out / storage.TIMING).write_text(json.dumps({"loop_s": scalars[Key.LOOP_S]}))
        self.send({"step": step, **scalars, **summaries, "final": final}, checkpoint)

    def flush(self, wait: bool = False) -> bool:
        """Send the outbox; True when it is empty. ``wait``: try at once, then again until the server answers or
        :func:`tracking.wait_seconds` have passed (then raise)."""
        deadline = time.monotonic() + tracking.wait_seconds()
        if wait:
            self._retry_at = 0.0
        while self._metrics or self._files:
            if time.monotonic() >= self._retry_at:
                try:
                    self._send_outbox()
                    continue
                except Exception as err:
                    if not tracking.transient(err):
                        raise
                    self._failed(err)
            if not wait:
                return False
            self._retry_at = min(self._retry_at, deadline)  # one last try at the deadline
            if time.monotonic() >= deadline:
                raise M2DError(f"tracking server {self.setup.tracking_uri} unreachable for "
                               f"{tracking.wait_seconds():g} s (${tracking.WAIT_ENV}): {len(self._metrics)} metric "
                               f"values and {len(self._files)} artifacts of run {self.setup.run_id} not logged")
            time.sleep(max(0.0, min(self._retry_at, deadline) - time.monotonic()))
        if self._down_since is not None:
            print(f"tracking: MLflow reachable again after {time.monotonic() - self._down_since:.0f} s; "
                  f"buffered metrics of run {self.setup.run_id} sent", flush=True)
            self._down_since, self._retry_at, self._delay = None, 0.0, 1.0
        return True

    def _send_outbox(self) -> None:
        run_id = self.setup.run_id
        while self._metrics:
            self.mlf.log_batch(run_id, metrics=self._metrics[:1000])  # MLflow's per-request limit
            del self._metrics[:1000]
        while self._files:
            self._files[0].send(self.mlf, run_id)
            del self._files[0]

    def _failed(self, err: Exception) -> None:
        if self._down_since is None:
            self._down_since, self._delay = time.monotonic(), 1.0
            first = self._metrics[0].step if self._metrics else "final"
            print(f"tracking: warning: MLflow unreachable ({tracking.brief(err)}); run {self.setup.run_id} keeps "
                  f"its metrics from step {first} on and re-sends them when it is back", flush=True)
        else:
            self._delay = min(self._delay * 2, 30.0)
        self._retry_at = time.monotonic() + self._delay

    def note_resume(self, checkpoint: Path | None, source: str) -> None:
        """Tag the run with the step a retried or resumed trial starts from (``m2d.resumed_from_step``)."""
        if checkpoint is not None and self.rank == 0:
            meta = Path(checkpoint) / storage.META
            step = json.loads(meta.read_text())["step"] if meta.is_file() else "?"
            for key, value in ((Tag.RESUMED_FROM_STEP, str(step)), (Tag.RESUMED_FROM, source)):
                tracking.retry(self.mlf.set_tag, self.setup.run_id, key, value, what=f"tag {key}")
