"""`katpilot train run RECIPE.toml`: a recipe's stages in order, each in its own run directory, chained.

    [run]                     out = "runs/tiny" (default: beside the recipe, named after it)
    model = "..."             the student every stage starts from unless its own table says otherwise
    [data]                    `katpilot train data`'s knobs          -> OUT/data
    [distill]                 `katpilot train distill`'s knobs       -> OUT/distill
    [drill]                   count, levels + `train sft`'s knobs    -> OUT/drill-data, OUT/drill
    [sft]                     `katpilot train sft`'s knobs           -> OUT/sft
    [rl]                      `katpilot train rl`'s knobs            -> OUT/rl
    [quant]                   type, imatrix, calibration             -> OUT/quant/NAME.gguf
    [eval]                    suite, limit, modes, max_tokens, seed, -> OUT/eval/NAME
                              temperature (0: greedy), baseline      -> OUT/eval/baseline
    [run] name = "..."        register the GGUF as a named model (`katpilot models`, `--model NAME`)

Only the tables present run, always in that order. Chaining: the data stage's directory is the
default `data` of every later stage; each training stage's final model is the default `model` of the
next (distill -> drill -> SFT -> RL), the last one is what [quant] exports, and the export is what [eval]
measures, against the model the recipe started from (`baseline`; a Hugging Face directory is exported
first, with [quant]'s type, to OUT/quant/baseline).
[drill] is a first SFT phase on direct answers alone: `count` ladder problems with `levels`
operations (in turn), answered think-off by the programmatic teacher, before [sft] teaches the mode
labels on the data stage's records (docs/recipe.md: mixed into one SFT, the drill drowns the modes).
A stage whose final model is already there (and whose settings are unchanged: the run directory
refuses a change) is skipped; a stage cut short resumes from its last checkpoint; the data stage and
the evaluation resume by themselves; an export is redone only when its model changed, an evaluation
only when its GGUF or its settings did (`recipe_stages`). OUT/report.md gathers every stage's figures and the evaluation's plot.
"""

from __future__ import annotations

import itertools
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError
from katpilot.eval.records import foreign_entries

STAGES = ("data", "distill", "drill", "sft", "rl", "quant", "eval")
TRAINING = ("distill", "drill", "sft", "rl")
DRILL_KEYS = {"count", "levels"}  # the drill's problems; the rest of [drill] is SFT's
RUN_KEYS = {"out", "model", "name"}
REPORT_FILE = "report.md"
DRILL_DATA = "drill-data"  # the drill's records, built by the data command
DATA_KEYS = {
    "repo", "tasks", "teacher", "critic", "prompts", "limit", "drill", "drill_levels", "jobs", "span",
    "votes", "margin", "random_share", "intent_share", "retries", "seed",
}  # fmt: skip


@dataclass
class StageResult:
    name: str
    out: Path
    seconds: float
    skipped: bool
    summary: str


@dataclass
class RecipeResult:
    out: Path
    stages: list[StageResult] = field(default_factory=list)
    evaluation: Any = None  # recipe_stages.EvalOutcome, when the recipe has [eval]
    report: Path | None = None


def read_recipe(path: Path) -> dict[str, Any]:
    try:
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KatpilotError(f"cannot read the recipe {path} ({exc})", "give a TOML file") from None
    unknown = [k for k in recipe if k not in ("run", *STAGES)]
    if unknown:
        raise KatpilotError(f"{path}: unknown table [{unknown[0]}]", f"tables: run, {', '.join(STAGES)}")
    if not any(stage in recipe for stage in STAGES):
        raise KatpilotError(f"{path} has no stage", f"add one of the tables {', '.join(STAGES)}")
    _check_tables(recipe)
    return recipe


def _check_tables(recipe: dict[str, Any]) -> None:
    """Every stage's settings checked before the first stage runs: a typo in [sft] must not wait hours."""
    from trainer.config import resolve
    from trainer.recipe_stages import check_table

    if not isinstance(recipe.get("run", {}), dict):
        raise KatpilotError("[run] must be a table", "write it as [run] with out = ... and model = ...")
    unknown_run = sorted(set(recipe.get("run", {})) - RUN_KEYS)
    if unknown_run:
        raise KatpilotError(f"[run] has an unknown key {unknown_run[0]!r}", f"known: {', '.join(sorted(RUN_KEYS))}")
    for key, value in recipe.get("run", {}).items():
        if not isinstance(value, str):
            raise KatpilotError(f"[run] {key} must be a string, not {value!r}", f'write {key} = "..."')
    if "name" in recipe.get("run", {}):
        from katpilot.models import check_model_name

        check_model_name(recipe["run"]["name"])  # the export is named after it: refused now, not after training
    if "eval" in recipe and "quant" not in recipe:
        raise KatpilotError("[eval] measures the [quant] stage's GGUF, and the recipe has no [quant]", "add [quant]")
    if "quant" in recipe and not any(stage in recipe for stage in TRAINING) and not recipe.get("run", {}).get("model"):
        raise KatpilotError("[quant] has no model to export", "add a training stage, or model = ... in [run]")
    for stage in STAGES:
        table = recipe.get(stage)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise KatpilotError(f"[{stage}] must be a table", f"write it as [{stage}] with key = value lines")
        if stage in ("quant", "eval"):
            check_table(stage, table)
        elif stage == "data":
            unknown = sorted(set(table) - DATA_KEYS)
            if unknown:
                raise KatpilotError(
                    f"[data] has an unknown key {unknown[0]!r}", f"known: {', '.join(sorted(DATA_KEYS))}"
                )
            _check_data_values(table)
        elif stage == "drill":
            if "data" in table:
                raise KatpilotError("[drill] builds its own data (count, levels)", "remove data = ... from [drill]")
            _drill_problems(table, recipe.get("data", {}))
            resolve(None, stage, _without(table, DRILL_KEYS), schema=_schema(stage))
        else:
            resolve(None, stage, table, schema=_schema(stage))


DATA_TEXT = ("repo", "tasks", "teacher", "critic", "prompts")
DATA_COUNTS = {"limit": 1, "drill": 0, "jobs": 1, "span": 0, "votes": 1, "retries": 0, "seed": 0}  # key: least
DATA_SHARES = ("margin", "random_share", "intent_share")  # within [0, 1]


def _check_data_values(table: dict[str, Any]) -> None:
    """[data]'s values, typed and in range when the recipe is read (the data stage's own flags are
    typed by the CLI; a recipe's are not)."""
    from trainer.data.sources import parse_kinds, parse_levels

    for key in DATA_TEXT:
        if key in table and not isinstance(table[key], str):
            raise KatpilotError(f"[data] {key} must be a string, not {table[key]!r}", f'write {key} = "..."')
    for key, least in DATA_COUNTS.items():
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise KatpilotError(
                f"[data] {key} must be a whole number of at least {least}, not {value!r}", f"write {key} = {least}"
            )
    for key in DATA_SHARES:
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1):
            raise KatpilotError(f"[data] {key} must be a number within [0, 1], not {value!r}", f"write {key} = 0.1")
    parse_kinds(str(table.get("tasks", "arithmetic")))
    parse_levels(table.get("drill_levels", "1"))


def release_memory() -> None:
    """Hand a finished training stage's memory back to the system: glibc keeps freed memory for reuse
    instead of returning it, so the recipe's one process carried each stage's peak into the next
    (measured on the tiny recipe: 13.8 GB resident through the eval, 1.6 GB with this; RL's peak
    12.2 GB instead of 14.2 GB)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (macOS, musl): their allocators return memory by themselves, or keep it


def _without(table: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k not in keys}


def _drill_problems(table: dict[str, Any], data: dict[str, Any]) -> tuple[int, tuple[int, ...], int]:
    """[drill]'s count and levels, checked, and the teacher's span that answers them directly."""
    from trainer.data.sources import drill_tasks, parse_levels
    from trainer.data.teachers import DEFAULT_SPAN

    count = table.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise KatpilotError(f"[drill] count must be a whole number of problems, not {count!r}", "write count = 4800")
    levels = parse_levels(table.get("levels", "1"))
    drill_tasks(0, levels=levels)  # checks the levels
    span = int(data.get("span", DEFAULT_SPAN))
    if max(levels) > span:
        raise KatpilotError(
            f"[drill] levels reach {max(levels)} operations, beyond [data] span = {span} (answered directly)",
            f"drill levels up to {span}, or raise the span",
        )
    return count, levels, span


def run_recipe(path: Path, settings: Any, echo: Callable[[str], None] = print, out: Path | None = None) -> RecipeResult:
    """Run every stage of the recipe at `path`; returns what each did and how long it took."""
    recipe = read_recipe(path)
    run = recipe.get("run", {})
    if out is not None:
        root = out
    elif run.get("out"):
        root = Path(str(run["out"])).expanduser()
        root = root if root.is_absolute() else path.parent / root
    else:
        root = path.with_suffix("")
    _check_root(root)
    result = RecipeResult(root)
    trained = [stage for stage in TRAINING if stage in recipe]
    for before, after in itertools.pairwise(trained):
        table = recipe[before]
        if table.get("method", "lora") == "lora" and not table.get("merge"):
            raise KatpilotError(
                f"{path}: a LoRA {before} stage hands [{after}] an adapter, not a model",
                f'set merge = true in [{before}] (or method = "full")',
            )
    data_dir: Path | None = None
    model = str(run.get("model", ""))
    name = str(run.get("name") or path.stem)
    gguf: Path | None = None
    stages = [stage for stage in STAGES if stage in recipe]
    repo = recipe.get("data", {}).get("repo")
    calibration = Path(repo).expanduser() if repo else None  # the importance matrix's text, when one is asked for
    for number, stage in enumerate(stages, start=1):
        table = dict(recipe[stage])
        started = time.perf_counter()
        stage_out = root / stage
        echo(f"katpilot: stage {number}/{len(stages)} {stage} -> {stage_out}")
        if stage == "data":
            summary, skipped = _data_stage(table, stage_out, settings)
            data_dir = stage_out
        elif stage == "quant":
            from trainer.recipe_stages import quant_stage, register

            exported = quant_stage(table, Path(model), stage_out, name, calibration, title=name)
            gguf, summary, skipped = exported.gguf, exported.summary, exported.skipped
            if run.get("name"):
                registered = register(gguf, name)
                summary += f"; registered as {name} ({registered})"
        elif stage == "eval":
            from trainer.recipe_stages import eval_stage

            assert gguf is not None  # read_recipe: [eval] needs [quant]
            start = str(table.get("baseline", run.get("model", "")))  # baseline = "" turns it off
            baseline = _baseline(start, dict(recipe["quant"]), root / "quant" / "baseline", calibration, echo)
            measured = eval_stage(table, gguf, stage_out, name, baseline, settings)
            result.evaluation = measured
            summary, skipped = measured.summary, False
        else:
            chained = {}
            if model and "model" not in table:
                chained["model"] = model
            if stage == "drill":
                table = _without(table, DRILL_KEYS)
                chained["data"] = str(_drill_data(recipe, root / DRILL_DATA, settings, echo))
            elif data_dir is not None and "data" not in table:
                chained["data"] = str(data_dir)
            summary, skipped, final = _training_stage(stage, table, chained, stage_out, path, settings, echo)
            model = str(final)
            release_memory()
        result.stages.append(StageResult(stage, stage_out, time.perf_counter() - started, skipped, summary))
        echo(f"katpilot: stage {stage} {'already done' if skipped else 'done'} in {result.stages[-1].seconds:.0f} s")
    from trainer.recipe_report import write_recipe_report

    result.report = write_recipe_report(root / REPORT_FILE, path, result)
    return result


RUN_ENTRIES = frozenset({*STAGES, DRILL_DATA, REPORT_FILE})  # all a recipe writes in its directory


def _check_root(root: Path) -> None:
    """Refuse a directory holding anything a recipe does not write there: its stages would replace
    (eval/) or mix with what is there, and its report.md would be replaced."""
    strangers = foreign_entries(root, RUN_ENTRIES)
    if strangers:
        raise KatpilotError(
            f"{root} holds files that are not a recipe's run ({', '.join(strangers[:3])})",
            "give [run] out (or --out) a new or empty directory, or this recipe's own earlier one",
        )


def _baseline(
    start: str, quant: dict[str, Any], out: Path, calibration: Path | None, echo: Callable[[str], None]
) -> str | None:
    """What [eval] compares against: `start` (its `baseline`, by default the starting model). Serving
    loads a GGUF or a name `katpilot models` lists as it is; a Hugging Face directory is exported first,
    with the [quant] table's type and matrix so both sides are quantized alike (once: the export keeps
    a stamp)."""
    if not start:
        return None
    directory = Path(start).expanduser()
    if not directory.is_dir():
        return start
    from trainer.recipe_stages import quant_stage

    exported = quant_stage(quant, directory, out, "baseline", calibration)
    echo(f"katpilot: the baseline, {directory}: {exported.summary}")
    return str(exported.gguf)


def _data_stage(table: dict[str, Any], out: Path, settings: Any) -> tuple[str, bool]:
    from trainer.data.builder import DataOptions
    from trainer.data.command import DataRun, run_data
    from trainer.data.sources import parse_kinds, parse_levels

    option_keys = ("votes", "margin", "random_share", "intent_share", "retries", "seed")
    options = DataOptions(**{k: table[k] for k in option_keys if k in table})
    run = DataRun(
        out=out,
        kinds=parse_kinds(str(table.get("tasks", "arithmetic"))),
        repo=Path(table["repo"]).expanduser() if table.get("repo") else None,
        teacher=table.get("teacher"),
        critic=table.get("critic", "teacher"),
        prompts=Path(table["prompts"]).expanduser() if table.get("prompts") else None,
        limit=table.get("limit"),
        drill=int(table.get("drill", 0)),
        drill_levels=parse_levels(table.get("drill_levels", "1")),
        jobs=int(table.get("jobs", 1)),
        options=options,
        **({"span": int(table["span"])} if "span" in table else {}),
    )
    summary = run_data(settings, run)
    return f"{summary.records} records from {summary.tasks} tasks", summary.ran == 0


def _drill_data(recipe: dict[str, Any], out: Path, settings: Any, echo: Callable[[str], None]) -> Path:
    """[drill]'s problems as a dataset of their own (resumable like the data stage): think-off answers,
    but for the share (`intent_share`) that also carries a user's request to think or not."""
    from trainer.data.builder import DataOptions
    from trainer.data.command import DataRun, run_data

    count, levels, span = _drill_problems(recipe["drill"], recipe.get("data", {}))
    seed = int(recipe.get("data", {}).get("seed", 0))
    options = DataOptions(random_share=0.0, seed=seed)  # no random mode: the drill is direct answers only
    built = run_data(settings, DataRun(out=out, kinds=(), drill=count, drill_levels=levels, span=span, options=options))
    echo(f"katpilot: drill data {out}: {built.records} records ({built.think_on} think-on)")
    return out


def _training_stage(
    stage: str,
    table: dict[str, Any],
    chained: dict[str, str],
    out: Path,
    recipe_path: Path,
    settings: Any,
    echo: Callable[[str], None],
) -> tuple[str, bool, Path]:
    from trainer import run_dir
    from trainer.config import resolve

    resolved = resolve(None, stage, table | chained, schema=_schema(stage))
    for key in table:  # where each value came from: the recipe, or the stage before
        resolved.sources[key] = str(recipe_path)
    for key in chained:
        resolved.sources[key] = "the stage before"
    final = out / run_dir.FINAL
    merged = final / "merged"
    if (final / "config.json").is_file() or (final / "adapter_config.json").is_file():
        run_dir.prepare(out, resolved, "sft" if stage == "drill" else stage)  # refuses changed settings
        done = merged if resolved.config.method == "lora" and resolved.config.merge else final
        return "final model already there", True, done
    if stage == "distill":
        from trainer.distill import run_distill

        distilled = run_distill(resolved, out, settings=settings, echo=echo)
        return f"{distilled.steps} steps on {distilled.examples} examples", False, distilled.final
    if stage == "rl":
        from trainer.rl.train import run_rl

        reinforced = run_rl(resolved, out)
        return f"{reinforced.steps} steps on {reinforced.prompts} prompts", False, reinforced.final
    from trainer.sft import run_sft

    tuned = run_sft(resolved, out)
    return f"{tuned.steps} steps on {tuned.records} records", False, tuned.final


def _schema(stage: str) -> Any:
    from trainer.config import DistillConfig, RLConfig, SFTConfig

    return {"distill": DistillConfig, "rl": RLConfig}.get(stage, SFTConfig)
