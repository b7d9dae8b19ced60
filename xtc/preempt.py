"""Stop a training run cleanly when its cluster job is about to end (time limit or preemption).

SLURM can warn a job before it kills it (``sbatch --signal``; the SLURM profile asks for ``SIGURG`` 180 s
ahead), and sends ``SIGTERM`` to a job it preempts or cancels. A trainer that gets either finishes the optimizer
step it is in, saves its resumable state (exactly what an evaluation saves: model, optimizer, schedule, RNG,
position in the epoch) and exits with ``EXIT_CODE``; the same command run again -- the workflow's retry --
continues from that step and ends with the metrics of an uninterrupted run. So a job loses at most one step, not
everything since its last evaluation.

``SIGURG`` is chosen because its default action is to be ignored: SLURM signals every process of the job step
(the job's shell, ``tee``, Snakemake's job process), and only the trainer, which installs a handler, reacts.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGURG, signal.SIGTERM)
EXIT_CODE = 75  # EX_TEMPFAIL: try again later


class Preempted(Exception):
    """Training stopped on a signal after saving its state; running the same command again resumes it."""

    def __init__(self, signame: str, global_step: int) -> None:
        super().__init__(f"stopped by {signame} after step {global_step} (time limit or preemption near); its "
                         "state is saved: run the same command again to resume (the workflow's retry does)")
        self.signame, self.global_step = signame, global_step


class StopRequest:
    """Set by ``SIGNALS`` once installed; the training loop asks it after every optimizer step."""

    def __init__(self) -> None:
        self.signame: str | None = None

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in SIGNALS:
                signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame) -> None:
        if self.signame is None:
            self.signame = signal.Signals(signum).name
            log.warning("%s received: saving the state after this step and stopping", self.signame)

    def __call__(self) -> str | None:
        return self.signame
