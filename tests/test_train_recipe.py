"""`katpilot train run RECIPE.toml`: the stages in order, chained, skipped once done, errors in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from quant_helpers import tiny_checkpoint

from katpilot import config as config_mod
from katpilot.errors import KatpilotError
from trainer.recipe import run_recipe


def _recipe(path: Path, model: Path, extra: str = "") -> Path:
    path.write_text(
        f"""
[run]
out = "runs"
model = "{model}"

[data]
tasks = "arithmetic"
limit = 12

[distill]
method = "full"
max_steps = 2
batch_size = 4
mtp_depth = 1
{extra}

[drill]
count = 8
levels = "1,2"
method = "full"
max_steps = 2
batch_size = 4

[sft]
method = "full"
max_steps = 2
batch_size = 4

[rl]
method = "full"
max_steps = 1
batch_size = 2
generations = 2
max_new_tokens = 8
""",
        encoding="utf-8",
    )
    return path


def test_a_recipe_runs_its_stages_chained_and_skips_them_once_done(smol_checkpoint: Path, tmp_path: Path) -> None:
    tiny = tiny_checkpoint("llama", smol_checkpoint, tmp_path / "tiny")
    recipe = _recipe(tmp_path / "tiny.toml", tiny)
    settings = config_mod.load_settings().settings
    result = run_recipe(recipe, settings, echo=lambda line: None)
    runs = tmp_path / "runs"
    assert [s.name for s in result.stages] == ["data", "distill", "drill", "sft", "rl"]
    assert not any(s.skipped for s in result.stages)
    drill_config = (runs / "drill" / "config.toml").read_text()
    assert f'model = "{runs / "distill" / "final"}"  # the stage before' in drill_config
    assert f'data = "{runs / "drill-data"}"  # the stage before' in drill_config
    drilled = [json.loads(line) for line in (runs / "drill-data" / "records.jsonl").read_text().splitlines()]
    assert {r["level"] for r in drilled} == {1, 2} and {r["task"] for r in drilled} == {
        f"drill-{i:04d}" for i in range(8)
    }
    assert all(r["mode"] == "off" for r in drilled if not r.get("intent"))  # direct answers, no random mode
    sft_config = (runs / "sft" / "config.toml").read_text()
    assert f'model = "{runs / "drill" / "final"}"  # the stage before' in sft_config
    assert f'data = "{runs / "data"}"  # the stage before' in sft_config
    assert f"max_steps = 2  # {recipe}" in sft_config
    assert (runs / "distill" / "final" / "mtp.safetensors").is_file() and (runs / "sft" / "final").is_dir()
    rl_config = (runs / "rl" / "config.toml").read_text()
    assert f'model = "{runs / "sft" / "final"}"  # the stage before' in rl_config and "generations = 2" in rl_config
    assert (runs / "rl" / "final" / "config.json").is_file() and result.stages[-1].summary.startswith("1 steps")
    assert (runs / "rl" / "final" / "mtp.safetensors").is_file()  # distillation's heads, carried through SFT and RL
    saved = sorted((runs / "sft" / "checkpoints").glob("checkpoint-*")) + sorted(
        (runs / "rl" / "checkpoints").glob("checkpoint-*")
    )
    assert len(saved) == 2 and all((c / "mtp.safetensors").is_file() for c in saved)  # every checkpoint exports whole
    again = run_recipe(recipe, settings, echo=lambda line: None)
    assert all(s.skipped for s in again.stages)
    changed = recipe.read_text().replace(
        "max_steps = 2\nbatch_size = 4\nmtp_depth", "max_steps = 3\nbatch_size = 4\nmtp_depth"
    )
    recipe.write_text(changed)
    with pytest.raises(KatpilotError, match="another max_steps"):
        run_recipe(recipe, settings, echo=lambda line: None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sft]\nepochs = 'many'\n", "epochs must be a float"),
        ("[train]\nx = 1\n", "unknown table [train]"),
        ("[run]\nmodel = 'x'\n", "has no stage"),
        ("[sft]\nbogus = 1\n", "unknown key 'bogus'"),
        ("[distill]\nmethod = 'lora'\n[sft]\n", "LoRA distill stage hands [sft] an adapter"),
        ("[sft]\n[rl]\n", "LoRA sft stage hands [rl] an adapter"),
        ("[drill]\ncount = 5\n[sft]\n", "LoRA drill stage hands [sft] an adapter"),
        ("[drill]\nlevels = '1'\n", "[drill] count must be a whole number"),
        ("[drill]\ncount = 5\nlevels = '1,7'\n", "are not distinct operation counts from 1 to 6"),
        ("[drill]\ncount = 5\nlevels = 'one'\n", "drill levels 'one' are not numbers"),
        ("[drill]\ncount = 5\nlevels = [1, 'two']\n", "drill levels [1, 'two'] are not whole numbers"),
        ("[drill]\ncount = 5\nlevels = [1, 7]\n", "are not distinct operation counts from 1 to 6"),
        ("[data]\nspan = 1\n[drill]\ncount = 5\nlevels = '1,2'\n", "beyond [data] span = 1"),
        ("[drill]\ncount = 5\nbogus = 1\n", "unknown key 'bogus'"),
        ("[drill]\ncount = 5\ndata = 'mine'\n", "[drill] builds its own data"),
        ("[rl]\nloss_type = 'ppo'\n", "loss_type must be one of"),
        ("[run]\nmodel = 'x'\n[quant]\n[eval]\njobs = 0\n", "[eval] jobs must be a whole number of at least 1, not 0"),
        (
            "[run]\nmodel = 'x'\n[quant]\n[eval]\nlimit = 'all'\n",
            "[eval] limit must be a whole number of at least 1, not 'all'",
        ),
        (
            "[run]\nmodel = 'x'\n[quant]\n[eval]\ntemperature = -1\n",
            "[eval] temperature = -1.0 is out of range (must be >= 0)",
        ),
        ("[run]\nmodel = 'x'\n[quant]\n[eval]\nmodes = 'auto,maybe'\n", "'maybe' is not a think mode"),
        ("[run]\nmodel = 'x'\n[quant]\n[eval]\nmax_tokens = 'many'\n", "[eval] max_tokens must be an integer"),
        ("[data\n", "cannot read the recipe"),
        ("[data]\nvotes = 'two'\n", "[data] votes must be a whole number of at least 1, not 'two'"),
        ("[data]\nteacher = 5\n", "[data] teacher must be a string, not 5"),
        ("[data]\nmargin = 2\n", "[data] margin must be a number within [0, 1], not 2"),
        ("[data]\ntasks = 'arithmetc'\n", "arithmetc"),
        ("[run]\nmodel = 'x'\nname = 'bad name!'\n[quant]\n", "'bad name!' cannot name a model"),
        ("[run]\nmodel = 5\n[quant]\n", "[run] model must be a string, not 5"),
        ("[run]\nmodel = 'x'\n[quant]\ntype = 'q9_9'\n", "[quant] type 'q9_9' is not a quantization type"),
        ("[run]\nmodel = 'x'\n[quant]\n[eval]\nsuite = 'bogus'\n", "[eval] suite 'bogus' is neither a bundled"),
        ("[sft]\nepochs = nan\n", "[sft] epochs must be a finite number, not nan"),
        ("[sft]\nwarmup_ratio = -1.0\n", "warmup_ratio must be within [0, 1], not -1.0"),
        ("[sft]\nweight_decay = -0.1\n", "weight_decay must be >= 0, not -0.1"),
    ],
)
def test_bad_recipes_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "katpilot", "train", "run", str(recipe)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_the_quant_stage_exports_once_and_again_only_when_its_model_changed(
    smol_checkpoint: Path, tmp_path: Path
) -> None:
    import os

    from trainer.recipe_stages import quant_stage

    tiny = tiny_checkpoint("llama", smol_checkpoint, tmp_path / "tiny")
    out = tmp_path / "quant"
    first = quant_stage({"type": "f16"}, tiny, out, "mine", None)
    assert not first.skipped and first.gguf == out / "mine.gguf" and first.gguf.is_file()
    assert "mine.gguf: f16" in first.summary and "no MTP heads" in first.summary
    assert quant_stage({"type": "f16"}, tiny, out, "mine", None).skipped
    assert not quant_stage({"type": "q8_0"}, tiny, out, "mine", None).skipped  # another type
    weights = next(tiny.glob("*.safetensors"))
    os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 10))  # a retrained model
    assert not quant_stage({"type": "q8_0"}, tiny, out, "mine", None).skipped
    with pytest.raises(KatpilotError, match="unknown key 'typ'"):
        run_recipe(_bad_recipe(tmp_path, '[quant]\ntyp = "q8_0"\n'), config_mod.load_settings().settings)


def test_a_recipe_never_takes_over_a_directory_holding_other_files(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nmodel = "x"\nout = "proj"\n\n[quant]\n\n[eval]\n', encoding="utf-8")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "notes.md").write_text("mine\n")
    with pytest.raises(KatpilotError, match=r"holds files that are not a recipe's run \(notes\.md\)"):
        run_recipe(recipe, config_mod.load_settings().settings, echo=lambda line: None)
    assert [p.name for p in proj.iterdir()] == ["notes.md"]
    from trainer.recipe_stages import eval_stage

    (proj / "eval").mkdir()
    (proj / "eval" / "mine.txt").write_text("mine\n")  # an eval/ the recipe did not make is not replaced
    with pytest.raises(KatpilotError, match="holds files and no recipe evaluation"):
        eval_stage({}, recipe, proj / "eval", "m", None, config_mod.load_settings().settings)
    assert (proj / "eval" / "mine.txt").read_text() == "mine\n"


def _bad_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(f'[run]\nmodel = "x"\n\n{text}', encoding="utf-8")
    return path


def test_a_hugging_face_starting_model_is_exported_once_to_be_the_evaluation_baseline(
    smol_checkpoint: Path, tmp_path: Path
) -> None:
    tiny = tiny_checkpoint("llama", smol_checkpoint, tmp_path / "tiny")
    recipe = tmp_path / "eval-only.toml"
    recipe.write_text(
        f'[run]\nout = "runs"\nmodel = "{tiny}"\n\n[quant]\ntype = "f16"\n\n'
        '[eval]\nsuite = "arithmetic"\nlimit = 2\nmodes = "off"\nmax_tokens = 4\n',
        encoding="utf-8",
    )
    settings = config_mod.load_settings().settings
    lines: list[str] = []
    result = run_recipe(recipe, settings, echo=lines.append)
    baseline = tmp_path / "runs" / "quant" / "baseline" / "baseline.gguf"
    assert baseline.is_file() and any("baseline.gguf: f16" in line for line in lines)
    assert result.evaluation is not None and result.evaluation.baseline is not None
    assert result.evaluation.baseline_out is not None and (result.evaluation.baseline_out / "results.json").is_file()
    exported_at = baseline.stat().st_mtime_ns
    lines.clear()
    run_recipe(recipe, settings, echo=lines.append)
    assert baseline.stat().st_mtime_ns == exported_at and any(
        "baseline.gguf already exported" in line for line in lines
    )
    recipe.write_text(recipe.read_text() + 'baseline = ""\n', encoding="utf-8")  # no baseline at all
    again = run_recipe(recipe, settings, echo=lines.append)
    assert again.evaluation is not None and again.evaluation.baseline is None
