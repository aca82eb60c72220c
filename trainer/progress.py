"""What a training run shows while it runs: one rich bar with the loss and tokens/s on a terminal, one
line per logged step otherwise (CI logs, `torchrun` output), from the main process only.

transformers' own display (a tqdm bar plus each log as a printed dict) is replaced, not doubled: the
metrics the bar shows are the ones `run_dir.MetricsLog` writes, tokens/s included, which transformers
does not count.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from trainer import run_dir


def metrics_callback(metrics: run_dir.MetricsLog, title: str = "train", stream: TextIO | None = None) -> Any:
    """A callback writing every logged step to metrics.jsonl and showing it (the main process only)."""
    from transformers import TrainerCallback

    class Metrics(TrainerCallback):
        def __init__(self) -> None:
            self.display: StepDisplay | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                self.display = StepDisplay(title, state.max_steps, stream or sys.stderr)
                self.display.step(state.global_step)  # a resumed run starts where it was

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.display is not None:
                self.display.step(state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if logs and state.is_world_process_zero and "loss" in logs:
                row = metrics.write(state.global_step, logs)
                if self.display is not None:
                    self.display.logged(row)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.display is not None:
                self.display.close()
                self.display = None

    return Metrics()


def replace_default_display(trainer: Any) -> None:
    """Removes transformers' tqdm bar and log printer: the metrics callback shows the same, and more."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)


def describe(row: dict[str, Any]) -> str:
    """`loss 1.234  lr 2e-04  1,234 tok/s` (and the loss parts when there are some)."""
    parts = [f"loss {row['loss']:.4g}"]
    parts += [f"{key[5:]} {value:.4g}" for key, value in row.items() if key.startswith("loss_")]
    if "learning_rate" in row:
        parts.append(f"lr {row['learning_rate']:.1e}")
    parts.append(f"{row.get('tokens_per_s', 0.0):,.0f} tok/s")
    return "  ".join(parts)


class StepDisplay:
    """A rich progress bar on a terminal; `step N/M  <describe>` lines on anything else."""

    def __init__(self, title: str, total: int, stream: TextIO) -> None:
        self.title, self.total, self.stream = title, total, stream
        self._bar: Any = None
        if stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(title),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=Console(file=stream),
                transient=False,
            )
            self._task = self._bar.add_task(title, total=total or None, metrics="")
            self._bar.start()

    def step(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)

    def logged(self, row: dict[str, Any]) -> None:
        text = describe(row)
        if self._bar is not None:
            self._bar.update(self._task, metrics=text)
        else:
            print(f"{self.title} step {row['step']}/{self.total}  {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
