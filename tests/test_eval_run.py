"""`katpilot eval` end to end: the real model on every bundled suite, the files it writes, the plot
against the JSON, a run killed with SIGKILL and resumed, a HumanEval file, hostile answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eval_helpers import ReplyEngine
from proc_helpers import process_table

from katpilot.config import load_settings
from katpilot.engine.local import LocalEngine
from katpilot.errors import KatpilotError
from katpilot.eval.command import EvalOptions, parse_thresholds, run_eval
from katpilot.eval.plot import AUTO_LABEL, build_figure
from katpilot.eval.records import RECORDS_FILE, Record, RunJournal

HUMANEVAL = Path(__file__).parent / "data" / "humaneval_mini.jsonl"
KATPILOT = [sys.executable, "-m", "katpilot"]


def small_repo(root: Path) -> Path:
    (root / "shapes.py").write_text(
        "class Circle:\n    def __init__(self, radius):\n        self.radius = radius\n\n"
        "    def circle_area(self):\n        return 3.14159 * self.radius ** 2\n"
    )
    (root / "report.py").write_text(
        "from shapes import Circle\n\n\ndef total_area(radii):\n"
        "    return sum(Circle(r).circle_area() for r in radii)\n\n\n"
        "def print_report(radii):\n    print(total_area(radii))\n"
    )
    return root


def settings(**extra: object) -> object:
    return load_settings({"max_tokens": 40, "temperature": 0.0, **extra}).settings


@pytest.mark.parametrize("suite", ["arithmetic", "code", "repo"])
def test_each_bundled_suite_and_mode_writes_report_json_and_plot(
    suite: str, engine: LocalEngine, tmp_path: Path
) -> None:
    options = EvalOptions(
        suite=suite, limit=2, out=tmp_path / "out", repo=small_repo(tmp_path), thresholds=parse_thresholds("0.3,0.7")
    )
    results, out = run_eval(settings(), options, engines=[engine])
    data = json.loads((out / "results.json").read_text())
    assert {c["condition"] for c in data["conditions"]} == {"auto@0.3", "auto@0.7", "on", "off"}
    assert len(data["records"]) == 2 * 4 and all(c["n"] == 2 for c in data["conditions"])
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "plot.svg").read_text().lstrip().startswith("<?xml")
    report = (out / "report.md").read_text()
    assert "| on |" in report and "![accuracy against tokens](plot.png)" in report
    # The embedded model is plain: no decision point, so the sweep says why it is unavailable.
    assert data["sweep"]["available"] is False and "no decision point" in data["sweep"]["why_not"]

    # What the figure plots is exactly the JSON's aggregates.
    conditions = {c["condition"]: c for c in data["conditions"]}
    lines = {line.get_label(): line.get_xydata().tolist() for line in build_figure(results).axes[0].get_lines()}
    assert lines["always on"] == [[conditions["on"]["mean_tokens"], 100 * conditions["on"]["accuracy"]]]
    assert lines["always off"] == [[conditions["off"]["mean_tokens"], 100 * conditions["off"]["accuracy"]]]
    configured = conditions["auto@0.5"] if "auto@0.5" in conditions else conditions["auto@0.3"]
    assert lines[AUTO_LABEL] == [[configured["mean_tokens"], 100 * configured["accuracy"]]]


def test_plot_of_an_available_sweep_has_one_point_per_threshold(tmp_path: Path) -> None:
    from eval_helpers import BranchingKat, gsm8k_file

    suite = gsm8k_file(tmp_path / "q.jsonl", {"What is 40 plus 2?": "42", "And 2 plus 40?": "42"})
    options = EvalOptions(suite=str(suite), thresholds=(0.1, 0.5, 0.9), out=tmp_path / "out")
    results, out = run_eval(settings(profile="kat"), options, engines=[BranchingKat()])
    data = json.loads((out / "results.json").read_text())
    autos = sorted((c for c in data["conditions"] if c["think"] == "auto"), key=lambda c: c["threshold"])
    line = next(x for x in build_figure(results).axes[0].get_lines() if x.get_label() == AUTO_LABEL)
    assert line.get_xydata().tolist() == [[c["mean_tokens"], 100 * c["accuracy"]] for c in autos]
    assert "## Threshold sweep" in (out / "report.md").read_text()


def run_cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KATPILOT, *args], capture_output=True, text=True, timeout=240, **kwargs)  # type: ignore[call-overload]


def test_the_command_prints_the_summary_and_refuses_bad_flags_in_one_line(tmp_path: Path) -> None:
    done = run_cli("eval", "--suite", str(HUMANEVAL), "--think", "off", "--max-tokens", "48", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "off" in done.stdout and f"report: {tmp_path / 'report.md'}" in done.stdout
    records = [json.loads(line) for line in (tmp_path / RECORDS_FILE).read_text().splitlines()]
    assert sorted(r["item"] for r in records) == ["Mini/0", "Mini/1", "Mini/2"]
    assert all(r["verifier"] == "python_tests" for r in records)
    for bad, says in [
        (["--think", "sometimes"], "'sometimes' is not a think mode"),
        (["--thresholds", "0:2:0.5"], "within [0, 1]"),
        (["--suite", "nowhere.jsonl"], "does not exist"),
        (["--limit", "0"], "--limit must be at least 1"),
    ]:
        args = ["eval", "--suite", str(HUMANEVAL), "--out", str(tmp_path / "bad"), *bad]
        if bad[0] == "--suite":
            args = ["eval", *bad, "--out", str(tmp_path / "bad")]
        failed = run_cli(*args)
        assert failed.returncode == 2 and says in failed.stderr and "Traceback" not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1


def test_a_run_killed_mid_way_resumes_without_duplicates_or_losses(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "eval",
        "--suite",
        "arithmetic",
        "--limit",
        "8",
        "--think",
        "off,on",
        "--max-tokens",
        "24",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen([*KATPILOT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / RECORDS_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not journal.exists() or journal.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = journal.read_bytes()
    kept = before[: before.rfind(b"\n") + 1]
    assert 3 <= kept.count(b"\n") < 16, "the kill landed too late to test a resume"

    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    after = journal.read_bytes()
    assert after.startswith(kept)  # nothing finished before the kill was lost or rewritten
    keys = [(r["item"], r["condition"]) for r in map(json.loads, after.decode().splitlines())]
    assert len(keys) == len(set(keys)) == 16  # 8 items x 2 modes, each once
    data = json.loads((out / "results.json").read_text())
    assert len(data["records"]) == 16


def test_a_torn_last_line_is_dropped_and_a_changed_run_is_refused(tmp_path: Path) -> None:
    fingerprint = {"suite": "s", "model": "m", "temperature": 0.0}
    journal = RunJournal(tmp_path, fingerprint)
    record = Record(
        "a", "off", "off", None, "off", "user", None, {"completion": 1}, 0.1, "stop", True, "exact", None, "x"
    )
    journal.add(record)
    journal.close()
    with (tmp_path / RECORDS_FILE).open("a") as f:
        f.write('{"item": "b", "condi')  # killed mid-write
    again = RunJournal(tmp_path, fingerprint)
    assert again.resumed == 1 and again.get("a", "off") == record
    again.close()
    assert (tmp_path / RECORDS_FILE).read_text().count("\n") == 1
    with pytest.raises(KatpilotError, match="holds a run with another temperature"):
        RunJournal(tmp_path, fingerprint | {"temperature": 0.7})


def test_a_rerun_may_add_items_but_not_swap_the_model_file_or_take_over_a_folder(
    model_path: Path, tmp_path: Path
) -> None:
    import shutil

    from quant.quantize import quantize

    model = tmp_path / "m.gguf"
    shutil.copy(model_path, model)
    out = tmp_path / "out"
    options = EvalOptions(suite="arithmetic", modes=("off",), limit=1, out=out)
    quiet = {"max_tokens": 8, "n_threads": 2}
    run_eval(settings(model=str(model), **quiet), options)
    more, _ = run_eval(settings(model=str(model), **quiet), EvalOptions("arithmetic", ("off",), limit=2, out=out))
    assert len(more.records) == 2 and more.summaries[0].n == 2  # a larger --limit resumes and adds one item
    quantize(model_path, tmp_path / "q8.gguf", "q8_0")
    (tmp_path / "q8.gguf").replace(model)  # another model at the same path, under the same name
    with pytest.raises(KatpilotError, match="holds a run with another model file's answers"):
        run_eval(settings(model=str(model), **quiet), options)
    older = json.loads((out / "run.json").read_text())
    del older["journal_format"]  # a run of a katpilot before content digests
    (out / "run.json").write_text(json.dumps(older))
    with pytest.raises(KatpilotError, match="holds a run with records of an older katpilot"):
        run_eval(settings(model=str(model), **quiet), options)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / ".DS_Store").write_bytes(b"")  # hidden files are nobody's work: an empty folder still
    (notes / "report.md").write_text("mine\n")
    with pytest.raises(KatpilotError, match="holds files and no katpilot evaluation"):
        run_eval(settings(model=str(model), **quiet), EvalOptions("arithmetic", ("off",), limit=1, out=notes))
    assert sorted(p.name for p in notes.iterdir()) == [".DS_Store", "report.md"]
    assert (notes / "report.md").read_text() == "mine\n"
    (notes / "report.md").unlink()
    run_eval(settings(model=str(model), **quiet), EvalOptions("arithmetic", ("off",), limit=1, out=notes))
    assert (notes / "run.json").is_file()


def test_humaneval_file_end_to_end_right_and_wrong_answers(tmp_path: Path) -> None:
    replies = {
        "below_zero": [
            "```python\n",
            "def below_zero(operations):\n",
            "    return min([0, *__import__('itertools').accumulate(operations)]) < 0\n",
            "```",
        ],
        "triple_sum": ["    return 3 * (a + b + c)\n"],  # the body only, as a completion model writes it
        "longest_word": ["```python\ndef longest_word(sentence):\n    return max(sentence.split(), key=len)\n```"],
    }
    options = EvalOptions(suite=str(HUMANEVAL), modes=("off",), out=tmp_path / "out")
    results, _ = run_eval(settings(profile="plain"), options, engines=[ReplyEngine(replies)])
    verdicts = {r.item: (r.passed, r.reason) for r in results.records}
    assert verdicts["Mini/0"] == (True, None) and verdicts["Mini/1"] == (True, None)
    passed, reason = verdicts["Mini/2"]  # max() of an empty sequence: the '' case fails
    assert not passed and reason is not None and "ValueError" in reason
    assert results.summaries[0].correct == 2


HOSTILE = {
    "loops": "def f():\n    return 1\nwhile True:\n    pass\n",
    "allocates": "def f():\n    return 1\nx = []\nwhile True:\n    x.append(' ' * 10**7)\n",
    "forks": "import os\ndef f():\n    return 1\nwhile True:\n    os.fork()\n",
    "connects": "import socket\ndef f():\n    return 1\nsocket.create_connection(('127.0.0.1', 9))\n",
    "writes": "def f():\n    return 1\nopen('/tmp/katpilot-eval-escape.txt', 'w').write('out')\n",
}


def descendants() -> list[int]:
    """Live processes below this one."""
    parents = {pid: int(fields[1]) for pid, fields in process_table().items()}
    found, frontier = [], [os.getpid()]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


def test_hostile_answers_fail_their_items_with_a_reason_and_the_run_goes_on(tmp_path: Path) -> None:
    lines = [
        json.dumps({"task_id": name, "text": f"Task {name}: write f.", "test_list": ["assert f() == 1"]})
        for name in HOSTILE
    ]
    (tmp_path / "mbpp.jsonl").write_text("\n".join(lines) + "\n")
    replies = {f"Task {name}:": [f"```python\n{code}```"] for name, code in HOSTILE.items()}
    options = EvalOptions(suite=str(tmp_path / "mbpp.jsonl"), modes=("off",), out=tmp_path / "out")
    started = time.monotonic()
    results, _ = run_eval(settings(profile="plain"), options, engines=[ReplyEngine(replies)])
    reasons = {r.item: r.reason or "" for r in results.records}
    assert set(reasons) == set(HOSTILE) and not any(r.passed for r in results.records)
    assert "time" in reasons["loops"] or "CPU" in reasons["loops"]
    assert "memory" in reasons["allocates"]
    assert reasons["forks"] == "process creation refused"
    assert "refused" in reasons["connects"] and "refused" in reasons["writes"]
    assert not Path("/tmp/katpilot-eval-escape.txt").exists()
    assert descendants() == []
    assert time.monotonic() - started < 60


def test_local_jobs_are_engines_sharing_the_threads(engine: LocalEngine, tmp_path: Path) -> None:
    """--jobs N locally: N llama.cpp engines, each with its share of the threads, answering N items at
    once (one stream of a small model leaves cores idle); every item is journaled once."""
    from katpilot.eval.command import open_engines

    said: list[str] = []
    with open_engines(settings(n_threads=2), 2, said.append, None) as engines:
        assert [e.llm.n_threads for e in engines] == [1, 1] and said == []  # type: ignore[attr-defined]
    with open_engines(settings(n_threads=1), 3, said.append, None) as engines:  # more would only share them
        assert [e.llm.n_threads for e in engines] == [1]  # type: ignore[attr-defined]
    assert said == ["katpilot: --jobs 3 on 1 thread: running 1 local engine"]
    options = EvalOptions(suite="arithmetic", modes=("on", "off"), limit=4, jobs=2, out=tmp_path, plot=False)
    results, _ = run_eval(settings(max_tokens=8, n_threads=2), options)
    done = sorted((r.item, r.condition) for r in results.records)
    assert len(done) == 8 and len(set(done)) == 8 and not (tmp_path / "plot.png").exists()


def test_serving_imports_neither_eval_nor_matplotlib() -> None:
    code = (
        "import sys, katpilot.cli, katpilot.server.app, lsp.server\n"
        "print(sorted(m for m in sys.modules if m.startswith(('katpilot.eval', 'matplotlib'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_answers_and_files_that_once_crashed_a_run_are_clear(tmp_path: Path) -> None:
    from katpilot.eval.items import EvalItem, grade
    from katpilot.eval.stats import paired_difference, ratio_of_sums

    huge = grade(EvalItem("x", "q", "numeric", expected="4"), "1" * 400)
    assert not huge.passed and huge.reason and "expected 4" in huge.reason
    assert not grade(EvalItem("x", "q", "numeric", expected="4"), "\\frac{" + "9" * 5000 + "}{3}").passed
    assert paired_difference([1.0, 0.0], [0.0, 1.0])[1] is None  # too few pairs for an interval
    wide = paired_difference([1.0] * 5 + [0.0] * 5, [0.0] * 5 + [1.0] * 5)[1]
    assert wide is not None and wide.low >= -1.0 and wide.high <= 1.0
    assert ratio_of_sums([1.0, 2.0], [2.0, 2.0]) == (0.75, None)
    with pytest.raises(KatpilotError, match="not finite"):
        parse_thresholds("0:inf:0.1")
    with pytest.raises(KatpilotError, match="stop >= start"):
        parse_thresholds("1:0:0.1")
    assert parse_thresholds("0.73105856,0.73105859") == (0.731059,)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": "t", "prompt": "def f():\n", "test": "", "entry_point": ""}) + "\n")
    with pytest.raises(KatpilotError, match="is not a Python function name"):
        run_eval(settings(), EvalOptions(suite=str(bad), out=tmp_path / "o"), engines=[ReplyEngine({})])
    bad.write_text(json.dumps({"question": "q", "answer": "none"}) + "\n")
    with pytest.raises(KatpilotError, match="has no final number"):
        run_eval(settings(), EvalOptions(suite=str(bad), out=tmp_path / "o"), engines=[ReplyEngine({})])
    occupied = tmp_path / "occupied"
    (occupied / RECORDS_FILE).mkdir(parents=True)
    with pytest.raises(KatpilotError, match="holds files and no katpilot evaluation"):
        RunJournal(occupied, {"suite": "s"})
    (occupied / "run.json").write_text(json.dumps({"suite": "s"}))  # a run of ours, its journal broken
    with pytest.raises(KatpilotError, match=r"cannot write .*records.jsonl \(Is a directory\)"):
        RunJournal(occupied, {"suite": "s"})
    (occupied / "run.json").write_text("[]")
    with pytest.raises(KatpilotError, match="is not a run's settings"):
        RunJournal(occupied, {"suite": "s"})


def test_the_recipes_autothink_figures_find_each_items_level(tmp_path: Path) -> None:
    """The suite's seed is kept apart from the sampling's: the figures rebuild the items with it."""
    import math

    from eval_helpers import BranchingKat

    from trainer.recipe_report import autothink_figures

    options = EvalOptions(suite="arithmetic", modes=("auto", "on"), limit=12, seed=3, out=tmp_path / "out")
    results, _ = run_eval(settings(profile="kat"), options, engines=[BranchingKat()])
    assert results.run["suite_seed"] == 3
    figures = autothink_figures(results)
    assert figures is not None and figures.items == 12
    assert not math.isnan(figures.think_on_easy) and not math.isnan(figures.think_on_hard)
    assert figures.decided_by_model == 1.0 and figures.token_share == figures.tokens_auto / figures.tokens_on
