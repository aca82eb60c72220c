"""A run directory: config.toml, metrics.jsonl, checkpoints/, final/, report.md (+ report.png).

    runs/<name>/config.toml     resolved settings and where each came from
                metrics.jsonl   one line per logged step (loss, learning rate, grad norm, tokens/s)
                checkpoints/    transformers' checkpoint-N/ (model or adapter, optimizer, scheduler, RNG)
                final/          the model to export (the adapter alone for LoRA; merged/ on request)
                report.md       what the run did, with its curves (report.png)

The checkpoints are transformers' own (`Trainer` saves and resumes them: optimizer, scheduler, RNG
and data position); this module only adds what it does not: the config with sources, the metrics
file, and the report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError
from katpilot.eval.records import foreign_entries, make_output_dir, write_atomic
from trainer.config import Resolved, to_toml

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
FINAL = "final"
REPORT_FILE = "report.md"
PLOT_FILE = "report.png"
# Settings a resumed run may change without changing what it computes.
MAY_CHANGE = frozenset({"save_steps", "save_total_limit", "logging_steps", "merge", "padding_free"})


def is_main_process() -> bool:
    """False in the other processes of a multi-process run (`torchrun`, `accelerate launch`): they
    train but write nothing of the run directory except through transformers (which saves on rank 0)."""
    return os.environ.get("RANK", "0") == "0"


def prepare(out: Path, resolved: Resolved, table: str) -> bool:
    """Make the run directory (or check a resumed one's config); True when resuming.

    A directory that holds files but no run of this kind is refused (its report.md and metrics would
    be replaced). Settings are fixed once the run has a result to resume from (a checkpoint or
    final/): before that, a rerun with other settings simply starts again (say, after a wrong --model)."""
    make_output_dir(out)
    if not is_main_process():
        return last_checkpoint(out) is not None
    before = _existing_settings(out, table)
    _drop_unfinished_checkpoints(out)
    text = to_toml(resolved, table)
    if before is not None and (last_checkpoint(out) is not None or (out / FINAL).exists()):
        now = read_toml_text(text, table)
        changed = [k for k in sorted(set(before) | set(now)) if k not in MAY_CHANGE and before.get(k) != now.get(k)]
        if changed:
            key = changed[0]
            raise KatpilotError(
                f"{out} holds a run with another {key} ({before.get(key)!r}, now {now.get(key)!r})",
                "give another --out, or delete that directory to start over",
            )
    write_atomic(out / CONFIG_FILE, text)
    checkpoint = last_checkpoint(out)
    _keep_metrics_until(out, checkpoint_step(checkpoint) if checkpoint else 0)
    return checkpoint is not None


def _existing_settings(out: Path, table: str) -> dict[str, Any] | None:
    """The [table] settings of the run in `out`; None for a new or empty directory."""
    import tomllib

    if not foreign_entries(out):
        return None
    try:
        section = tomllib.loads((out / CONFIG_FILE).read_text(encoding="utf-8")).get(table)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        section = None  # not a config.toml of ours: the directory is somebody else's
    if not isinstance(section, dict):
        raise KatpilotError(f"{out} holds files and no katpilot {table} run", "give --out a new or empty directory")
    return section


def _complete(checkpoint: Path) -> bool:
    """transformers writes trainer_state.json last: without it a checkpoint was cut off mid-save."""
    try:
        return isinstance(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")), dict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def _drop_unfinished_checkpoints(out: Path) -> None:
    """A save cut off (Ctrl-C, a full disk) leaves a checkpoint nothing can resume from: removed, so
    the run resumes from the last whole one."""
    import shutil

    for checkpoint in _checkpoints(out):
        if not _complete(checkpoint):
            shutil.rmtree(checkpoint, ignore_errors=True)


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def _keep_metrics_until(out: Path, step: int) -> None:
    """A resumed run redoes the steps after its checkpoint: their old metric lines go."""
    rows = read_metrics(out)
    kept = [r for r in rows if r.get("step", 0) <= step]
    if len(kept) != len(rows) or ((out / METRICS_FILE).exists() and not rows):
        write_atomic(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))


def read_toml_text(text: str, table: str) -> dict[str, Any]:
    import tomllib

    section = tomllib.loads(text).get(table, {})
    return section if isinstance(section, dict) else {}


def _checkpoints(out: Path) -> list[Path]:
    """checkpoint-N directories, by step."""
    found = [p for p in (out / CHECKPOINTS).glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()]
    return sorted(found, key=checkpoint_step)


def last_checkpoint(out: Path) -> Path | None:
    """The latest whole checkpoint (see `_complete`)."""
    whole = [p for p in _checkpoints(out) if _complete(p)]
    return whole[-1] if whole else None


class MetricsLog:
    """Appends one JSON line per logged step; tokens/s from the tokens counted since the last line."""

    def __init__(self, out: Path) -> None:
        self.path = out / METRICS_FILE
        self.tokens = 0
        self._last_tokens = 0
        self._last_time = time.perf_counter()
        self._parts: dict[str, list[float]] = {}

    def add_parts(self, parts: dict[str, float]) -> None:
        """A micro-batch's loss parts (ce, uld, mtp, ...): their means go into the next line as loss_<part>."""
        self.add_values({f"loss_{name}": value for name, value in parts.items()})

    def add_values(self, values: dict[str, float]) -> None:
        """A micro-batch's measurements under their own names: their means go into the next line."""
        for name, value in values.items():
            self._parts.setdefault(name, []).append(value)

    def write(self, step: int, logs: dict[str, float]) -> dict[str, Any]:
        now = time.perf_counter()
        row: dict[str, Any] = {"step": step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        row |= {name: sum(values) / len(values) for name, values in self._parts.items() if values}
        self._parts = {}
        row["tokens_per_s"] = (self.tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
        self._last_tokens, self._last_time = self.tokens, now
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        return row


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = out / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn line of a killed run
    return rows


# (label, keys): a panel of report.png draws the metrics named by `keys`; a key ending in "_" or "/" stands
# for every metric that starts with it
Panel = tuple[str, tuple[str, ...]]
DEFAULT_PANELS: tuple[Panel, ...] = (
    ("loss", ("loss",)),
    ("loss parts", ("loss_",)),
    ("learning rate", ("learning_rate",)),
    ("tokens/s", ("tokens_per_s",)),
)


def write_report(out: Path, title: str, facts: list[str], panels: tuple[Panel, ...] = DEFAULT_PANELS) -> None:
    """report.md with the curves of `panels` (report.png); the main process only."""
    if not is_main_process():
        return
    rows = [r for r in read_metrics(out) if "loss" in r]
    lines = [f"# {title}", "", *[f"- {fact}" for fact in facts], ""]
    if rows:
        _plot(out, rows, panels)
        first, last = rows[0], rows[-1]
        lines += [
            f"Loss {first['loss']:.4f} at step {first['step']} -> {last['loss']:.4f} at step {last['step']}.",
            "",
            f"![{', '.join(label for label, _ in panels)}]({PLOT_FILE})",
            "",
        ]
    write_atomic(out / REPORT_FILE, "\n".join(lines))


def _plot(out: Path, rows: list[dict[str, Any]], panels: tuple[Panel, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    names = sorted({k for r in rows for k in r})
    shown = []
    for label, patterns in panels:
        keys = [k for k in names if any(k.startswith(p) if p.endswith(("_", "/")) else k == p for p in patterns)]
        if keys:
            shown.append((keys, label))
    fig, axes = plt.subplots(len(shown), 1, figsize=(7, 2.4 * len(shown)), sharex=True)
    for ax, (keys, label) in zip(axes if len(shown) > 1 else [axes], shown, strict=True):
        for key in keys:
            ax.plot(steps, [r.get(key, float("nan")) for r in rows], label=key.removeprefix("loss_"))
        if len(keys) > 1:
            ax.legend(fontsize=7)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.supxlabel("step")
    fig.tight_layout()
    fig.savefig(out / PLOT_FILE, dpi=110)
    plt.close(fig)
