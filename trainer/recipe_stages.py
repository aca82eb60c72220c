"""The recipe's serving stages: `[quant]` exports the last training stage's model to a GGUF, `[eval]`
measures it (and the model the recipe started from) with `katpilot eval`, and `[run] name` registers
the GGUF in katpilot's model store.

Each is skipped when its output is there and up to date: the export keeps a stamp of what it was
made from (the model's files and their modification times, the type, the importance matrix); the
evaluation keeps one of its settings and of the GGUF, and resumes from its journal while both hold.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError
from katpilot.eval.records import foreign_entries

QUANT_KEYS = {"type", "imatrix", "calibration"}
EVAL_KEYS = {"suite", "limit", "modes", "baseline", "seed", "max_tokens", "temperature", "jobs"}
STAMP_FILE = "stamp.json"


@dataclass(frozen=True)
class QuantOutcome:
    gguf: Path
    skipped: bool
    summary: str


@dataclass(frozen=True)
class EvalOutcome:
    out: Path
    results: Any  # katpilot.eval.results.EvalResults
    baseline_out: Path | None
    baseline: Any | None
    summary: str


def check_table(stage: str, table: dict[str, Any]) -> None:
    known = QUANT_KEYS if stage == "quant" else EVAL_KEYS
    unknown = sorted(set(table) - known)
    if unknown:
        raise KatpilotError(f"[{stage}] has an unknown key {unknown[0]!r}", f"known: {', '.join(sorted(known))}")
    if stage == "eval":
        _check_eval_values(table)
    else:
        _check_quant_values(table)


def _check_quant_values(table: dict[str, Any]) -> None:
    from quant.quantize import TYPES

    for key in QUANT_KEYS:
        if key in table and not isinstance(table[key], str):
            raise KatpilotError(f"[quant] {key} must be a string, not {table[key]!r}", f'write {key} = "..."')
    kind = str(table.get("type", "q8_0"))
    if kind.lower() not in TYPES:
        raise KatpilotError(f"[quant] type {kind!r} is not a quantization type", f"use one of {', '.join(TYPES)}")


def _check_eval_values(table: dict[str, Any]) -> None:
    """[eval]'s values, checked when the recipe is read: not after half an hour of training. The two
    that are serving settings (max_tokens, temperature) follow the settings' own rules."""
    from katpilot.config import check_value
    from katpilot.eval.command import parse_modes

    for key, least, example in (("limit", 1, 60), ("jobs", 1, 2), ("seed", 0, 0)):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise KatpilotError(
                f"[eval] {key} must be a whole number of at least {least}, not {value!r}", f"write {key} = {example}"
            )
    for key, fixed in (("max_tokens", "max_tokens = 256"), ("temperature", "temperature = 0.0")):
        problem = check_value(key, table[key])[1] if key in table else None
        if problem:
            raise KatpilotError(f"[eval] {key} {problem}", f"write {fixed}")
    parse_modes(str(table.get("modes", "auto,on,off")))
    from katpilot.eval.suites import BUNDLED

    suite = table.get("suite", "arithmetic")
    if not isinstance(suite, str) or (suite not in BUNDLED and not Path(suite).expanduser().is_file()):
        raise KatpilotError(
            f"[eval] suite {suite!r} is neither a bundled suite nor a file",
            f"use {', '.join(BUNDLED)}, or the path of a HumanEval, MBPP or GSM8K .jsonl file",
        )


def quant_stage(
    table: dict[str, Any], model: Path, out: Path, name: str, calibration: Path | None, title: str | None = None
) -> QuantOutcome:
    """`model` (a checkpoint directory, or a LoRA run's adapter: merged into its base) as OUT/NAME.gguf,
    named `title` inside (`general.name`; default: the export's own choice, `quant.export.model_name`)."""
    from quant.export import export_checkpoint
    from quant.imatrix import imatrix_for_export
    from quant.lora import adapter_base

    type_name = str(table.get("type", "q8_0"))
    imatrix = str(table.get("imatrix", "none"))
    lora = None
    checkpoint = model
    if (model / "adapter_config.json").is_file():
        checkpoint, lora = adapter_base(model), model
    target = out / f"{name}.gguf"
    base = _fingerprint(checkpoint) if lora is not None else {}  # the model itself, when not an adapter
    stamp = {"model": _fingerprint(model), "base": base, "type": type_name, "imatrix": imatrix}
    stamp_path = out / STAMP_FILE
    if target.is_file() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        return QuantOutcome(target, True, f"{target.name} already exported")
    out.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)
    calibration_dir = Path(str(table.get("calibration") or calibration or ".")).expanduser()
    notices: list[str] = []

    def matrix() -> Any:  # computed only once the checkpoint has passed the export's checks
        found, notice = imatrix_for_export(imatrix, checkpoint, type_name.lower(), calibration_dir)
        notices.extend([notice] if notice else [])
        return found

    report = export_checkpoint(checkpoint, target, type_name, lora=lora, imatrix=matrix, name=title)
    stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    size = target.stat().st_size / 2**20
    heads = f", MTP heads in {report.companion.name}" if report.companion else ", no MTP heads"
    notes = "".join(f"; {n}" for n in [*notices, *report.notices])
    return QuantOutcome(target, False, f"{target.name}: {type_name}, {size:.0f} MiB{heads}{notes}")


def _fingerprint(directory: Path) -> dict[str, float]:
    """Every file of a checkpoint with its modification time: a retrained model no longer matches."""
    return {
        str(path.relative_to(directory)): path.stat().st_mtime
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def eval_stage(table: dict[str, Any], gguf: Path, out: Path, name: str, spec: str | None, settings: Any) -> EvalOutcome:
    """`katpilot eval` of the exported model (OUT/NAME) and of the baseline `spec` (a GGUF or a model
    name, the recipe's [eval] baseline resolved; None: none) in OUT/baseline, same items.

    Greedy unless the table says otherwise, as `katpilot eval` is. A stamp of the table, the GGUF
    (size and modification time) and the baseline decides between resuming and starting afresh: a
    new export or a changed setting makes the old records stale, and OUT is the recipe's own."""
    from katpilot.eval.command import JOURNAL_FORMAT, EvalOptions, parse_modes, run_eval

    suite = str(table.get("suite", "arithmetic"))
    modes = parse_modes(str(table.get("modes", "auto,on,off")))
    limit = int(table["limit"]) if table.get("limit") is not None else None
    seed = int(table.get("seed", 0))
    jobs = int(table.get("jobs", 1))  # items at once: local llama.cpp engines sharing the threads
    changes: dict[str, Any] = {"temperature": float(table.get("temperature", 0.0))}
    if table.get("max_tokens") is not None:  # the longest response; a thinking 135M model can ramble
        changes["max_tokens"] = int(table["max_tokens"])
    settings = dataclasses.replace(settings, **changes)
    stat = gguf.stat()
    measured = {k: v for k, v in table.items() if k != "jobs"}  # how many at once changes no figure
    # the journal's format too: a stale eval/ of an older katpilot is the recipe's own, redone rather than refused
    stamp: dict[str, Any] = {"table": measured, "model": [str(gguf), stat.st_size, stat.st_mtime], "baseline": spec}
    stamp["journal"] = JOURNAL_FORMAT
    stamp_path = out / STAMP_FILE
    if not stamp_path.is_file() and foreign_entries(out):
        raise KatpilotError(  # only the recipe's own evaluations are replaced
            f"{out} holds files and no recipe evaluation", "give [run] out (or --out) a new or empty directory"
        )
    if not stamp_path.is_file() or json.loads(stamp_path.read_text()) != stamp:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    mine = out / name
    shown = sys.stderr.isatty()  # the progress bar `katpilot eval` shows
    results, _ = run_eval(
        dataclasses.replace(settings, model=str(gguf)),
        EvalOptions(suite, modes, limit=limit, out=mine, seed=seed, jobs=jobs),
        show_progress=shown,
    )
    baseline = baseline_out = None
    if spec:
        baseline_out = out / "baseline"
        baseline, _ = run_eval(
            dataclasses.replace(settings, model=spec),
            EvalOptions(suite, modes, limit=limit, out=baseline_out, seed=seed, jobs=jobs),
            show_progress=shown,
        )
    return EvalOutcome(mine, results, baseline_out, baseline, _eval_summary(results, baseline))


def _eval_summary(results: Any, baseline: Any | None) -> str:
    parts = []
    for label, which in (("model", results), ("baseline", baseline)):
        if which is None:
            continue
        rows = ", ".join(
            f"{s.condition} {s.accuracy:.0%} ({s.mean_tokens:.0f} tokens)" for s in which.shown_summaries()
        )
        parts.append(f"{label}: {rows}")
    return "; ".join(parts)


def register(gguf: Path, name: str) -> Path:
    from katpilot.models import register_model

    return register_model(gguf, name)
