"""`katpilot train data`: the tagging rule, the programmatic teacher, the embedded model as a real
teacher on a fixture repository, the dataset's shape, secrets, the card, and kill-and-resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from eval_helpers import ReplyEngine
from hypothesis import given
from hypothesis import strategies as st
from train_fixtures import PLANTED_SECRET, write_repo

from katpilot import config as config_mod
from katpilot import gate
from katpilot.engine.local import LocalEngine
from katpilot.errors import KatpilotError
from katpilot.eval.items import grade
from katpilot.eval.suites.arithmetic import arithmetic_ladder
from trainer.data.builder import INTENT_TEXT, RECORDS_FILE, STATE_DIR, TASKS_FILE, DataJournal, DataOptions, Outcome
from trainer.data.command import CARD_FILE, DataRun, run_data
from trainer.data.sources import drill_tasks, load_prompts, parse_kinds, parse_levels
from trainer.data.tagging import choose_mode, rule_mode
from trainer.data.tasks import REPO_KINDS

KATPILOT = [sys.executable, "-m", "katpilot"]


def _settings(max_tokens: int = 40, temperature: float = 0.7) -> config_mod.Settings:
    return replace(config_mod.load_settings().settings, max_tokens=max_tokens, temperature=temperature)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / RECORDS_FILE).read_text(encoding="utf-8").splitlines()]


def _outcomes(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / STATE_DIR / TASKS_FILE).read_text(encoding="utf-8").splitlines()]


# -- the gate's whole-response helpers ------------------------------------------------------------

_plain = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).map(str.strip)


@given(_plain, st.sampled_from(["on", "off"]), _plain, _plain)
def test_render_and_split_round_trip(judge: str, mode: str, think: str, answer: str) -> None:
    parts = gate.Parts(judge, mode, think if mode == "on" else "", answer)  # type: ignore[arg-type]
    if any(gate.has_tag(t) for t in (parts.judge, parts.think, parts.answer)):
        with pytest.raises(ValueError):
            gate.render_kat(parts)
        return
    assert gate.split(gate.render_kat(parts)) == parts


def test_render_refuses_tags_and_unstripped_parts() -> None:
    with pytest.raises(ValueError):
        gate.render_kat(gate.Parts("why", "off", "", "a <answer> inside"))
    with pytest.raises(ValueError):
        gate.render_kat(gate.Parts(" why", "off", "", "x"))
    with pytest.raises(ValueError):
        gate.render_kat(gate.Parts("why", "off", "steps", "x"))


# -- the tagging rule on scripted pass rates ------------------------------------------------------


@pytest.mark.parametrize(
    ("off", "on", "margin", "expected"),
    [
        (1.0, 1.0, 0.1, "off"),  # equal: no reason to think
        (0.5, 0.6, 0.1, "off"),  # within the margin
        (0.5, 0.61, 0.1, "on"),  # beyond it
        (0.0, 1.0, 0.1, "on"),
        (0.8, 0.2, 0.1, "off"),  # thinking hurts
        (0.0, 0.0, 0.1, "off"),
        (0.5, 0.75, 0.25, "off"),
        (0.5, 0.75, 0.0, "on"),
    ],
)
def test_rule_follows_the_documented_margin(off: float, on: float, margin: float, expected: str) -> None:
    assert rule_mode(off, on, margin) == expected


def test_random_share_is_seeded_and_near_its_rate() -> None:
    draws = [choose_mode(f"t{i}", 1.0, 0.0, random_share=0.2) for i in range(2000)]
    overturned = [d for d in draws if d.chosen_by == "random"]
    assert 0.07 < len(overturned) / len(draws) < 0.13  # half the draws agree with the rule anyway
    assert {d.mode for d in overturned} == {"on"}
    assert all(d.mode == "off" for d in draws if d.chosen_by == "rates")
    assert draws == [choose_mode(f"t{i}", 1.0, 0.0, random_share=0.2) for i in range(2000)]
    assert all(choose_mode(f"t{i}", 0.0, 1.0, random_share=0.0).mode == "on" for i in range(50))


# -- the programmatic teacher ---------------------------------------------------------------------


def test_programmatic_teacher_think_on_records_are_all_correct(tmp_path: Path) -> None:
    out = tmp_path / "arith"
    summary = run_data(_settings(), DataRun(out=out, kinds=("arithmetic",), teacher="programmatic", limit=120))
    records = _records(out)
    assert summary.records == len(records) > 120  # intent records come on top
    ladder = {item.id: item for item in arithmetic_ladder(10_000, 600)}
    on = [r for r in records if r["mode"] == "on"]
    assert on, "no think-on record"
    for record in on:
        item = ladder[record["task"]]
        assert grade(item, record["answer"]).passed, record
        assert record["verdict"]["passed"] and record["answer_from"] == "teacher"
        # the steps compute the answer: the last step's result is the answer
        assert record["think"].splitlines()[-1].rstrip(".").split("= ")[-1] == item.expected
    # the decision follows difficulty: short problems direct, long ones thought through
    by_level: dict[int, list[str]] = {}
    for r in records:
        if r["chosen_by"] == "rates":
            by_level.setdefault(r["level"], []).append(r["mode"])
    assert set(by_level[1]) == {"off"} and set(by_level[6]) == {"on"}
    # no arithmetic item katpilot eval measures (seed 0) is in the data
    assert not {p["messages"][0]["content"] for p in records} & {i.prompt for i in arithmetic_ladder(0)}


def test_drill_adds_one_step_problems_of_their_own_after_the_limit(tmp_path: Path) -> None:
    out = tmp_path / "drill"
    summary = run_data(_settings(), DataRun(out=out, kinds=("arithmetic",), teacher="programmatic", limit=12, drill=30))
    assert summary.tasks == 42
    drilled = [r for r in _records(out) if r["task"].startswith("drill-")]
    assert {r["task"] for r in drilled} == {f"drill-{i:04d}" for i in range(30)}
    assert {r["level"] for r in drilled} == {1} and all(r["verdict"]["passed"] for r in drilled)
    held_out = {i.prompt for i in arithmetic_ladder(0)} | {i.prompt for i in arithmetic_ladder(10_000, 600)}
    assert not {r["messages"][0]["content"] for r in drilled} & held_out
    assert [t.item.prompt for t in drill_tasks(10)] == [t.item.prompt for t in drill_tasks(30)[:10]]
    with pytest.raises(KatpilotError, match="--drill must be 0 or more"):
        drill_tasks(-1)


def test_drill_levels_alternate_and_a_level_outside_the_ladder_is_refused() -> None:
    drilled = drill_tasks(9, levels=(1, 3))
    assert [t.item.level for t in drilled] == [1, 3] * 4 + [1]
    assert [t.item.prompt for t in drilled[:4]] == [t.item.prompt for t in drill_tasks(4, levels=(1, 3))]
    assert [t.item.prompt for t in drill_tasks(3)] == [t.item.prompt for t in drill_tasks(6, levels=(1, 2))[::2]]
    for bad in ((), (0,), (7,), (2, 2)):
        with pytest.raises(KatpilotError, match="not distinct operation counts"):
            drill_tasks(3, levels=bad)
    assert parse_levels("1, 2") == parse_levels([1, 2]) == (1, 2)  # a flag's text or a recipe's TOML array


# -- the embedded model as a real teacher on a fixture repository ---------------------------------


def test_embedded_teacher_builds_a_dataset_from_a_repo(tmp_path: Path, engine: LocalEngine) -> None:
    repo = write_repo(tmp_path / "repo")
    out = tmp_path / "data"
    run = DataRun(
        out=out,
        kinds=(*REPO_KINDS, "arithmetic"),
        repo=repo,
        limit=14,
        options=DataOptions(votes=1, intent_share=0.3, retries=1),
    )
    summary = run_data(_settings(max_tokens=32), run, engines=[engine])
    records, outcomes = _records(out), _outcomes(out)

    assert {o["kind"] for o in outcomes} == {*REPO_KINDS, "arithmetic"}  # every kind mined and tried
    assert {o["task"] for o in outcomes} >= {r["task"] for r in records}
    assert summary.records == len(records) > 0
    assert len({r["id"] for r in records}) == len(records)
    languages = {Path(o["task"].split(":")[1]).suffix for o in outcomes if ":" in o["task"]}
    assert {".py", ".js"} <= languages

    for r in records:
        # each record's assistant text parses with the gate into exactly its parts
        text = r["messages"][-1]["content"]
        assert gate.split(text) == gate.Parts(r["judge"], r["mode"], r["think"], r["answer"])
        assert r["messages"][0]["role"] == "user" and r["judge"]
        assert r["verdict"]["passed"], r  # only verified answers are kept
        assert r["teacher"] == ("programmatic" if r["kind"] == "arithmetic" else engine.info.name)
        assert set(r["pass_rates"]) == {"off", "on"} and r["verifier"]
        if r["kind"] in REPO_KINDS:
            assert r["source_file"] and r["symbol"]

    # the card's counts are the records'
    card = (out / CARD_FILE).read_text(encoding="utf-8")
    on = sum(r["mode"] == "on" for r in records)
    assert f"records: **{len(records)}** (think-on {on}, think-off {len(records) - on}" in card
    for kind in {r["kind"] for r in records}:
        of_kind = [r for r in records if r["kind"] == kind]
        k_on = sum(r["mode"] == "on" for r in of_kind)
        assert f"| {kind} | {len(of_kind)} | {k_on} | {len(of_kind) - k_on} |" in card
    assert "## The tagging rule" in card and "within `margin`" in card

    # no planted secret anywhere in the output directory
    for path in out.rglob("*"):
        if path.is_file():
            assert PLANTED_SECRET not in path.read_text(encoding="utf-8", errors="replace"), path

    # the output loads with `datasets` (the train extra), by file and by directory (the card names the file)
    datasets = pytest.importorskip("datasets")
    by_file = datasets.load_dataset("json", data_files=str(out / RECORDS_FILE), split="train")
    assert by_file.num_rows == len(records)
    assert datasets.load_dataset(str(out), split="train").num_rows == len(records)


class _ThinkingHelps(ReplyEngine):
    """A teacher that is wrong without thinking and right with it; its critic says `verdict` (on purpose)."""

    def __init__(self, verdict: str) -> None:
        super().__init__({})
        self.verdict = verdict

    def pieces_for(self, prompt: str) -> list[str]:
        if "Is the proposed answer correct?" in prompt:
            return [self.verdict]
        if "In one sentence" in prompt:
            return ["Adding ", "needs ", "a ", "careful ", "step."]
        if prompt.endswith("<think>\n"):
            return ["2 ", "plus ", "2 ", "is ", "4.", "\n</think>\n\n", "4"]
        return ["5"]


@pytest.mark.parametrize("verdict", ["no", "yes"])
def test_the_critic_checks_think_on_answers(tmp_path: Path, verdict: str) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2+2?", "answer": "4", "verifier": "numeric"}) + "\n")
    out = tmp_path / "d"
    run = DataRun(out=out, kinds=("prompt",), prompts=prompts, options=DataOptions(votes=2, retries=2, intent_share=0))
    summary = run_data(_settings(), run, engines=[_ThinkingHelps(verdict)])
    (outcome,) = _outcomes(out)
    assert outcome["pass_rates"] == {"off": 0.0, "on": 1.0} and outcome["mode"] == "on"
    if verdict == "no":  # both verified answers rejected, then two fresh ones: dropped, counted
        assert summary.records == 0 and outcome["status"] == "dropped"
        assert outcome["critic_rejections"] == 4
        assert "critic rejections: 4" in (out / CARD_FILE).read_text()
    else:
        (record,) = _records(out)
        assert record["mode"] == "on" and record["answer"] == "4" and record["think"] == "2 plus 2 is 4."
        assert record["judge"] == "Adding needs a careful step." and record["critic"] == record["teacher"]


# -- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(KatpilotError, match="not a task kind"):
        parse_kinds("complete,nonsense")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"answer": "no prompt"}\n')
    with pytest.raises(KatpilotError, match="line 2 has no 'prompt'"):
        load_prompts(bad)
    bad.write_text("{not json\n")
    with pytest.raises(KatpilotError, match="line 1 is not JSON"):
        load_prompts(bad)
    repo = write_repo(tmp_path / "repo")
    with pytest.raises(KatpilotError, match="needs a model teacher"):
        run_data(_settings(), DataRun(out=tmp_path / "x", kinds=("complete",), repo=repo, limit=1))
    with pytest.raises(KatpilotError, match="--jobs must be at least 1"):  # with no model to load as well
        run_data(_settings(), DataRun(out=tmp_path / "x", kinds=("arithmetic",), teacher="programmatic", jobs=0))
    proc = subprocess.run(
        [*KATPILOT, "train", "data", str(repo), "--tasks", "fix", "--votes", "0", "--out", str(tmp_path / "y")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--votes must be at least 1" in proc.stderr


def test_a_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "d"
    run_data(_settings(), DataRun(out=out, kinds=("arithmetic",), teacher="programmatic", limit=3))
    with pytest.raises(KatpilotError, match="another votes"):
        run_data(_settings(), DataRun(out=out, kinds=("arithmetic",), limit=3, options=DataOptions(votes=3)))


# -- kill and resume ------------------------------------------------------------------------------


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path: Path, model_path: Path) -> None:
    repo = write_repo(tmp_path / "repo")
    out = tmp_path / "data"
    args = [
        *KATPILOT, "train", "data", str(repo), "--teacher", str(model_path), "--tasks", "repo",
        "--votes", "1", "--limit", "8", "--max-tokens", "16", "--critic", "none", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tasks_file = out / STATE_DIR / TASKS_FILE
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (not tasks_file.exists() or tasks_file.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before_tasks = [json.loads(x) for x in tasks_file.read_text().splitlines() if x.strip()]
    assert 2 <= len(before_tasks) < 8, "the kill landed too late to test a resume"
    done_before = {t["task"] for t in before_tasks}
    before_records = [r for r in _records(out) if r["task"] in done_before]

    finished = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert "resuming" in finished.stderr
    records, outcomes = _records(out), _outcomes(out)
    assert len({o["task"] for o in outcomes}) == len(outcomes) == 8
    assert len({r["id"] for r in records}) == len(records)  # no duplicate
    assert all(r in records for r in before_records)  # no completed record lost
    on = sum(r["mode"] == "on" for r in records)
    card = (out / CARD_FILE).read_text(encoding="utf-8")
    assert f"records: **{len(records)}** (think-on {on}, think-off {len(records) - on}" in card


def test_local_teacher_and_critic_serve_parallel_workers(tmp_path: Path, model_path: Path) -> None:
    """--jobs 2 with a local GGUF: two llama.cpp engines for the teacher and two for another critic."""
    prompts = tmp_path / "p.jsonl"
    rows = [{"prompt": f"What is {i} + 2?", "answer": str(i + 2), "verifier": "numeric"} for i in range(4)]
    rows += [{"prompt": f"Say one word about the number {i}."} for i in range(2)]  # the critic judges these
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "d"
    args = [
        *KATPILOT, "train", "data", "--tasks", "prompt", "--prompts", str(prompts), "--teacher", str(model_path),
        "--critic", str(model_path), "--jobs", "2", "--votes", "1", "--max-tokens", "12", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    outcomes = _outcomes(out)
    assert sorted(o["task"] for o in outcomes) == sorted({o["task"] for o in outcomes}) and len(outcomes) == 6
    records = _records(out)
    assert len({r["id"] for r in records}) == len(records)
    assert (out / CARD_FILE).exists()


def test_the_journal_drops_records_of_unfinished_tasks_and_torn_lines(tmp_path: Path) -> None:
    out = tmp_path / "d"
    journal = DataJournal(out, {"a": 1})
    journal.finish([{"id": "t1", "task": "t1"}], Outcome("t1", "prompt", "kept", records=1))
    journal.close()
    with (out / RECORDS_FILE).open("a") as f:  # killed after a task's records, before its outcome ...
        f.write(json.dumps({"id": "t2", "task": "t2"}) + "\n" + '{"id": "t3", "ta')  # ... and mid-line
    with (out / STATE_DIR / TASKS_FILE).open("a") as f:
        f.write('{"task": "t9", "ki')  # a torn outcome line
    again = DataJournal(out, {"a": 1})
    assert set(again.outcomes) == {"t1"} and again.records == [{"id": "t1", "task": "t1"}]
    assert again.done("t1") and not again.done("t2")
    again.close()
    assert _records(out) == [{"id": "t1", "task": "t1"}]
    assert len(_outcomes(out)) == 1
    with pytest.raises(KatpilotError, match="another a"):
        DataJournal(out, {"a": 2})


def test_secrets_in_prompts_and_ids_never_reach_the_output(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    rows = [
        {"prompt": f"My key is {PLANTED_SECRET}. What is 2+2?", "answer": "4", "verifier": "numeric"},
        {"prompt": "What is 3+3?", "answer": "6", "verifier": "numeric", "id": f"ask-{PLANTED_SECRET}"},
        {"prompt": "What is 2+2 again?", "answer": "4", "verifier": "numeric"},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "d"
    run = DataRun(out=out, kinds=("prompt",), prompts=prompts, critic="none", options=DataOptions(votes=1))
    summary = run_data(_settings(), run, engines=[_ThinkingHelps("yes")])
    assert summary.records == 1  # only the third prompt holds no secret
    outcomes = _outcomes(out)
    assert sum(o["withheld"] for o in outcomes) == 2
    assert "records withheld by the secret filter: 2" in (out / CARD_FILE).read_text()
    for path in out.rglob("*"):
        if path.is_file():
            assert PLANTED_SECRET not in path.read_text(encoding="utf-8"), path
    again = run_data(_settings(), run, engines=[_ThinkingHelps("yes")])  # resumes: the hashed id is known
    assert again.ran == 0


def test_parallel_workers_intent_records_and_a_critic_without_ground_truth(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    rows = [{"prompt": f"What is 2+2? (variant {i})", "answer": "4", "verifier": "numeric"} for i in range(12)]
    rows += [{"prompt": f"Say something about 2+2 (variant {i})."} for i in range(4)]  # no answer: the critic judges
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "d"
    run = DataRun(out=out, kinds=("prompt",), prompts=prompts, jobs=2, options=DataOptions(votes=1, intent_share=0.5))
    engines = [_ThinkingHelps("yes"), _ThinkingHelps("yes")]
    run_data(_settings(), run, engines=engines)
    assert all(e.streams for e in engines)  # both workers answered
    records = _records(out)
    assert len(_outcomes(out)) == 16 and len({r["id"] for r in records}) == len(records)
    intents = [r for r in records if r["chosen_by"] == "intent"]
    assert intents, "no intent record at a share of one half"
    for r in intents:
        assert r["mode"] == ("on" if r["intent"] == "think" else "off")
        assert r["messages"][0]["content"].endswith(INTENT_TEXT[r["intent"]])
        assert r["critic"] == (r["teacher"] if r["mode"] == "on" else "")
    judged = [r for r in records if "Say something" in r["messages"][0]["content"]]
    assert judged and all(r["verifier"] == "critic" and r["critic"] for r in judged)


def test_a_worker_is_a_teacher_and_critic_pair_when_the_critic_has_fewer_engines() -> None:
    """A remote teacher with --jobs 4 and a local critic capped at 2 threads: two workers, not an IndexError."""
    from trainer.data.command import _workers

    teachers = [_ThinkingHelps("yes") for _ in range(4)]
    critics = [_ThinkingHelps("yes") for _ in range(2)]
    run = DataRun(out=Path("unused"), kinds=("prompt",), jobs=4, critic="another-model")
    workers = _workers(_settings(), run, teachers, critics, None)
    assert [w.critic is not None for w in workers] == [True, True]


def test_out_must_be_new_or_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("my project\n")
    with pytest.raises(KatpilotError, match="not a dataset katpilot made"):
        run_data(_settings(), DataRun(out=tmp_path, kinds=("arithmetic",), limit=2))
    assert (tmp_path / "README.md").read_text() == "my project\n"
    repo = write_repo(tmp_path / "repo")
    with pytest.raises(KatpilotError, match="needs a model teacher"):
        run_data(_settings(), DataRun(out=tmp_path / "x", kinds=("complete",), repo=repo, limit=1))
    assert not (tmp_path / "x").exists()  # nothing made: a rerun with a teacher is not refused
