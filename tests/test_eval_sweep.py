"""The threshold sweep on a scripted KAT engine, and the statistics of a scripted stream of results.

With log-probabilities (-1, -2) for <think_on> and <think_off>, p(on) = 1 / (1 + e^-1) = 0.7310586,
so a threshold at or below it thinks (and answers 42, right) and one above answers directly (41,
wrong): the switch must happen exactly there, and the sweep must reuse responses and scores.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from eval_helpers import BranchingKat, ReplyEngine, gsm8k_file

from katpilot.config import load_settings
from katpilot.errors import KatpilotError
from katpilot.eval.command import EvalOptions, run_eval
from katpilot.eval.stats import Interval

P_ON = 1 / (1 + math.exp(-1))
THRESHOLDS = (0.2, 0.5, 0.731, 0.7311, 0.9)  # on, on, on (0.731 <= p), off, off


def kat_settings(**extra: object) -> object:
    return load_settings({"profile": "kat", "max_tokens": 64, "temperature": 0.0, **extra}).settings


def test_sweep_switches_exactly_at_p_on_and_reuses_the_scoring(tmp_path: Path) -> None:
    suite = gsm8k_file(tmp_path / "q.jsonl", {"What is 40 plus 2?": "42", "And 2 plus 40?": "42"})
    engine = BranchingKat()
    options = EvalOptions(suite=str(suite), modes=("auto", "on", "off"), thresholds=THRESHOLDS, out=tmp_path / "out")
    results, _ = run_eval(kat_settings(), options, engines=[engine])

    autos = {s.threshold: s for s in results.summaries if s.think == "auto"}
    assert [autos[t].think_on_rate for t in THRESHOLDS] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert [autos[t].accuracy for t in THRESHOLDS] == [1.0, 1.0, 1.0, 0.0, 0.0]
    for record in (r for r in results.records if r.think == "auto"):
        assert record.decided_by == "model" and record.p_on == pytest.approx(P_ON, abs=1e-12)
        assert record.mode == ("on" if record.threshold <= P_ON else "off")

    # 2 items x 5 thresholds = 10 auto records from 2 generations per item (one per decision),
    # and p(on) scored by the engine once per item: the second generation's judge hit the memo.
    assert results.sweep is not None and results.sweep.available
    assert (results.sweep.records, results.sweep.generated) == (10, 4)
    assert len(engine.scored) == 2
    assert (results.counts.scored, results.counts.score_reuses) == (2, 2)
    assert results.counts.generated == 4 + 4  # the sweep's 4, and on and off for each item
    assert results.counts.reused == 6
    reused = [r for r in results.records if r.reused_from]
    assert {r.reused_from for r in reused} == {"auto@0.5", "auto@0.7311"}  # the configured 0.5 went first

    # Against the forced modes: auto pays its judge (4 tokens up to </judge>) on top of the branch
    # it takes: thinking is 7 tokens, answering directly 2.
    by = {(c.auto, c.against): c for c in results.comparisons}
    assert (by[("auto@0.5", "on")].token_ratio, by[("auto@0.5", "on")].accuracy_difference) == (11 / 7, 0.0)
    assert (by[("auto@0.9", "on")].token_ratio, by[("auto@0.9", "on")].accuracy_difference) == (6 / 7, -1.0)
    assert (by[("auto@0.9", "off")].token_ratio, by[("auto@0.9", "off")].accuracy_difference) == (3.0, 0.0)


def test_sweep_without_probabilities_says_why_and_still_evaluates(tmp_path: Path) -> None:
    suite = gsm8k_file(tmp_path / "q.jsonl", {"What is 40 plus 2?": "42"})
    engine = ReplyEngine({"40 plus 2": ["ok", "</judge>", "\n<think_off>", "\n<answer>\n", "42", "</answer>"]}, None)
    options = EvalOptions(suite=str(suite), modes=("auto",), thresholds=(0.3, 0.6), out=tmp_path / "out")
    results, out = run_eval(kat_settings(), options, engines=[engine])
    assert results.sweep is not None and not results.sweep.available
    assert "p(on) is not available" in (results.sweep.why_not or "")
    assert [s.accuracy for s in results.summaries] == [1.0, 1.0]
    assert results.sweep.generated == 1  # the second threshold could not change anything
    assert "Unavailable: p(on) is not available" in (out / "report.md").read_text()


REPLIES = {f"Question {i}?": [f"The answer is {i if i < 8 else -1}", "."] + ["pad"] * i for i in range(10)}


def test_statistics_of_a_scripted_stream_of_results(tmp_path: Path) -> None:
    """Known verdicts and token counts in; the exact summary and intervals out."""
    suite = gsm8k_file(tmp_path / "q.jsonl", {q: str(i) for i, q in enumerate(REPLIES)})
    options = EvalOptions(suite=str(suite), modes=("off", "on"), out=tmp_path / "out")
    settings = load_settings({"profile": "plain", "max_tokens": 64, "temperature": 0.0}).settings
    results, _ = run_eval(settings, options, engines=[ReplyEngine(REPLIES)])
    off = results.summary("off")
    assert off is not None
    assert (off.n, off.correct, off.accuracy) == (10, 8, 0.8)
    assert off.accuracy_ci == Interval(pytest.approx(0.4901625, abs=1e-7), pytest.approx(0.9433178, abs=1e-7))
    assert off.mean_tokens == 2 + 4.5  # two pieces and i pads, i = 0..9
    assert off.mean_segment_tokens == {"judge": 0, "think": 0, "answer": 6.5, "other": 0}
    assert off.think_on_rate == 0.0 and off.decided_by_model_rate == 0.0
    on = results.summary("on")
    # plain think=on prefills <think>; the script never closes it, so the session closes the block
    # once and the model answers again: the same reply, as thinking and then as the answer.
    assert on is not None and on.think_on_rate == 1.0 and on.decided_by_model_rate == 0.0
    assert (on.correct, on.mean_tokens) == (8, 13.0)
    assert on.mean_segment_tokens == {"judge": 0, "think": 6.5, "answer": 6.5, "other": 0}


def test_a_plain_models_auto_is_its_off_response_generated_once(tmp_path: Path) -> None:
    """No decision point and the same prompt: auto at every threshold reuses off's response."""
    suite = gsm8k_file(tmp_path / "q.jsonl", {q: str(i) for i, q in enumerate(REPLIES)})
    options = EvalOptions(suite=str(suite), modes=("auto", "on", "off"), thresholds=(0.3, 0.6), out=tmp_path / "out")
    engine = ReplyEngine(REPLIES)
    results, _ = run_eval(kat_settings(profile="plain"), options, engines=[engine])
    assert results.counts.generated == 2 * 10  # on and off; auto never generates
    assert engine.streams == 10 + 2 * 10  # off once per item, on twice (the session closes its think block)
    assert results.counts.reused == 2 * 10
    by = {(r.item, r.condition): r for r in results.records}
    for item in {r.item for r in results.records}:
        off = by[(item, "off")]
        for auto in (by[(item, "auto@0.3")], by[(item, "auto@0.6")]):
            assert (auto.answer, auto.passed, auto.tokens, auto.mode) == (off.answer, off.passed, off.tokens, "off")
            assert (auto.decided_by, auto.p_on, auto.reused_from, auto.think) == ("none", None, "off", "auto")
    assert results.summary("auto@0.3").accuracy == results.summary("off").accuracy == 0.8
    # without off among the modes, auto generates as before
    alone = ReplyEngine(REPLIES)
    options = EvalOptions(suite=str(suite), modes=("auto",), out=tmp_path / "alone")
    results, _ = run_eval(kat_settings(profile="plain"), options, engines=[alone])
    assert alone.streams == 10 and {r.decided_by for r in results.records} == {"none"}


def test_one_item_decided_without_p_on_leaves_the_sweep_available(tmp_path: Path) -> None:
    """Only an engine that gives no p(on) anywhere makes the sweep unavailable; one odd item is counted."""

    class OneOdd(BranchingKat):
        def pieces_for(self, prompt: str) -> list[str]:
            if "Odd" in prompt and prompt.endswith("<judge>\n"):
                return ["hm", "<think_off>", "<answer>", "42", "</answer>"]  # its own tag, no </judge>
            return super().pieces_for(prompt)

    suite = gsm8k_file(tmp_path / "q.jsonl", {"What is 40 plus 2?": "42", "Odd: 2 plus 40?": "42"})
    options = EvalOptions(suite=str(suite), modes=("auto",), thresholds=(0.5, 0.9), out=tmp_path / "out")
    results, _ = run_eval(kat_settings(), options, engines=[OneOdd()])
    assert results.sweep is not None and results.sweep.available
    assert results.sweep.decided_without_p_on == 1
    modes = {(r.item, r.condition): r.mode for r in results.records}
    assert modes[("line-1", "auto@0.5")] == "on" and modes[("line-1", "auto@0.9")] == "off"


def test_a_rerun_on_another_file_of_the_same_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = gsm8k_file(tmp_path / "a" / "q.jsonl", {"What is 2 plus 2?": "4"})
    second = gsm8k_file(tmp_path / "b" / "q.jsonl", {"What is 3 plus 3?": "6"})
    engine = ReplyEngine({"2 plus 2": ["4"], "3 plus 3": ["6"]})
    run_eval(
        kat_settings(profile="plain"),
        EvalOptions(suite=str(first), modes=("off",), out=tmp_path / "out"),
        engines=[engine],
    )
    with pytest.raises(KatpilotError, match="other items"):
        run_eval(
            kat_settings(profile="plain"),
            EvalOptions(suite=str(second), modes=("off",), out=tmp_path / "out"),
            engines=[engine],
        )
