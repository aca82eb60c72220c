"""The tiny AutoThink recipe from scratch (slow: 30 to 35 minutes on 2 cores).

    pytest -m slow tests/test_recipe_tiny.py -s

`katpilot train run recipes/tiny-autothink.toml` takes the embedded SmolLM2-135M through data,
distillation (the MTP head), a drill of direct answers, cold-start SFT, Step-SRPO, the q8_0 export and the evaluation; the
assertions are the recipe's acceptance figures, read from the evaluation of the exported GGUF on
held-out items of the arithmetic ladder (the data stage draws its problems from other seeds).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from katpilot import config as config_mod
from trainer.recipe import run_recipe
from trainer.recipe_report import autothink_figures

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny-autothink.toml"
CLI = [sys.executable, "-m", "katpilot"]


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.xfail(
    strict=True,
    reason="issue 20 open: auto mode's accuracy (15.0%) is below always-on's (21.7%), at 56% of its tokens "
    "(measured 2026-12-07, docs/recipe.md); strict: remove this mark once it passes",
)
def test_the_tiny_recipe_makes_a_model_that_decides_when_to_think(tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = config_mod.load_settings().settings
    result = run_recipe(RECIPE, settings, out=out)
    assert [stage.name for stage in result.stages] == ["data", "distill", "drill", "sft", "rl", "quant", "eval"]
    for stage in result.stages:
        print(f"{stage.name:8} {stage.seconds:6.0f} s  {stage.summary}")
    total = sum(stage.seconds for stage in result.stages)
    print(f"total {total:.0f} s")

    figures = autothink_figures(result.evaluation.results)
    assert figures is not None and figures.items >= 60
    print(figures)
    assert figures.decided_by_model >= 0.95, figures
    assert figures.think_on_hard >= 2 * figures.think_on_easy and figures.think_on_hard > 0, figures
    assert figures.accuracy_auto >= figures.accuracy_on - 0.02, figures
    assert figures.token_share <= 0.70, figures

    gguf = out / "quant" / "tiny-autothink.gguf"
    assert gguf.is_file() and (out / "quant" / "tiny-autothink.mtp.gguf").is_file()
    assert (out / "report.md").is_file() and (out / "eval" / "tiny-autothink" / "plot.png").is_file()
    report = (out / "report.md").read_text()
    assert "decides its mode itself" in report and "plot.png" in report

    listed = subprocess.run([*CLI, "models", "--json"], capture_output=True, text=True, check=True)
    names = {model["name"] for model in json.loads(listed.stdout)}
    assert "tiny-autothink" in names, names
    asked = subprocess.run(
        [*CLI, "ask", "--model", "tiny-autothink", "--json", "--temperature", "0", "Ana has 12 apples. How many?"],
        capture_output=True,
        text=True,
    )
    assert asked.returncode == 0, asked.stderr[-2000:]
    response = json.loads(asked.stdout)
    assert response["profile"] == "kat" and response["mode"] in ("on", "off"), response
