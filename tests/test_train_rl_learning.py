"""Step-SRPO's learning test (slow): the cold-started embedded model learns when to think.

    pytest -m slow tests/test_train_rl_learning.py -s

Why a synthetic task: on the arithmetic ladder the embedded SmolLM2-135M, cold-started on the
programmatic teacher's records, answers nothing right in either mode (measured: 0 of 48 sampled
answers on one- and two-step problems, 0 of 48 on five- and six-step ones), so no reward could
tell the modes apart. The task here is one the model can do, with a programmatic verifier, and on
which thinking pays only when the problem is long: a few facts about letters (`K = 47.`, `R = K.`)
and a question about one of them. Easy: the letter asked for has its number given (copy it).
Hard: it is five links from its number (`R = Q`, `Q = K`, ... `W = 47`), with three other numbers
about: answered directly it is mostly a guess among them; thinking writes the links out one by one,
each a copy from the prompt, and the answer copies the last. (With three links the cold-started
model answered 88% right without thinking, measured, so thinking did not pay and Step-SRPO rightly
took it off hard problems too.)

The cold start (3 epochs of full SFT on 128 problems) sees hard problems thought through, and easy
ones thought through three times in four (a teacher that over-thinks), so it thinks on many easy
problems it need not. Step-SRPO, with the judge reward, should take thinking off the
easy problems while the hard ones keep it and their accuracy; the same run with the judge reward
off (plain GRPO: every token, the mode tag included, gets the answer advantage) should not,
because on easy problems both modes pass alike and the answer reward says nothing about the mode.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from katpilot import gate  # noqa: E402
from katpilot.eval.items import EvalItem, item_to_json  # noqa: E402

LETTERS = "BCDFGHJKLMNPQRSTVWXZ"
EASY, HARD = 1, 5  # links from the letter asked for to its number
STEPS = 20


def chain_item(rng: random.Random, index: int, hops: int) -> tuple[EvalItem, str]:
    """(the problem, the thinking that solves it): one chain of `hops` links plus three numbered distractors."""
    letters = rng.sample(LETTERS, hops + 3)
    chain, distractors = letters[:hops], letters[hops:]
    numbers = rng.sample(range(10, 100), 4)
    facts = [f"{chain[-1]} = {numbers[0]}."]
    facts += [f"{a} = {b}." for a, b in itertools.pairwise(chain)]
    facts += [f"{d} = {n}." for d, n in zip(distractors, numbers[1:], strict=True)]
    rng.shuffle(facts)
    asked = chain[0]
    prompt = " ".join(facts) + f" What number is {asked}? Answer with the number alone."
    steps = [f"{a} = {b}." for a, b in itertools.pairwise(chain)] + [f"{chain[-1]} = {numbers[0]}."]
    think = "\n".join([*steps, f"So {asked} = {numbers[0]}."])
    item = EvalItem(f"chain-{index:03d}-h{hops}", prompt, "numeric", expected=str(numbers[0]), level=hops)
    return item, think


def records(seed: int, count: int) -> list[dict[str, object]]:
    """Cold-start and RL records in the data stage's shape: messages, the item, the mode label."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        hops = EASY if index % 2 == 0 else HARD
        item, think = chain_item(rng, index, hops)
        if hops == HARD:
            mode, judge = "on", "The number is a few links away, so I should follow them one by one."
        else:
            label_on = (index // 2) % 4 != 0  # three easy problems in four thought through, needlessly
            mode = "on" if label_on else "off"
            judge = (
                "Let me check the facts before answering."
                if label_on
                else "The number is given right there, so I can answer at once."
            )
        parts = gate.Parts(judge, mode, think if mode == "on" else "", item.expected)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": item.prompt},
                    {"role": "assistant", "content": gate.render_kat(parts)},
                ],
                "item": item_to_json(item),
                "mode": "off" if hops == EASY else "on",  # what thinking pays for: the RL label
                "kind": "chain",
                "level": hops,
            }
        )
    return rows


@dataclass(frozen=True)
class Measure:
    think_on_easy: float
    think_on_hard: float
    correct_easy: float
    correct_hard: float
    reward: float  # answer + judge, the training reward, mean per rollout

    def row(self, name: str) -> str:
        return (
            f"{name:<18} think-on easy {self.think_on_easy:.2f} hard {self.think_on_hard:.2f}   "
            f"correct easy {self.correct_easy:.2f} hard {self.correct_hard:.2f}   reward {self.reward:.3f}"
        )


def measure(model_dir: Path, held_out: Path) -> Measure:
    """G = 4 sampled answers (temperature 1, as in training) to each held-out problem, scored with the
    training rewards."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.config import RLConfig
    from trainer.rl.prompts import load_prompts
    from trainer.rl.rewards import RewardSettings, group_rewards
    from trainer.rl.rollouts import Sampling, generate

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = load_prompts(str(held_out)).prompts
    torch.manual_seed(1234)
    g = 4
    on: dict[int, list[float]] = {EASY: [], HARD: []}
    correct: dict[int, list[float]] = {EASY: [], HARD: []}
    rewards: list[float] = []
    for start in range(0, len(prompts), 8):
        chunk = prompts[start : start + 8]
        batch = generate(model, tokenizer, chunk, RLConfig().system_prompt, Sampling(g, 96, 1.0, 1.0))
        for i, prompt in enumerate(chunk):
            group = batch.segments[i * g : (i + 1) * g]
            got = group_rewards(prompt.item, group, prompt.label, RewardSettings())
            on[prompt.level] += [float(s.mode == "on") for s in group]
            correct[prompt.level] += got.correct
            rewards += [a + j for a, j in zip(got.answer, got.judge, strict=True)]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return Measure(mean(on[EASY]), mean(on[HARD]), mean(correct[EASY]), mean(correct[HARD]), mean(rewards))


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_step_srpo_takes_thinking_off_easy_problems_and_plain_grpo_does_not(model_path: Path, tmp_path: Path) -> None:
    from trainer.config import RLConfig, resolve
    from trainer.rl.train import run_rl
    from trainer.sft import run_sft

    train = write_jsonl(tmp_path / "train.jsonl", records(seed=0, count=128))
    # RL's prompts are new to the policy: on the cold start's own problems it can recall a hard answer
    # without thinking (measured: the judge reward then took thinking off hard problems too)
    fresh = write_jsonl(tmp_path / "rl.jsonl", records(seed=2, count=128))
    held_out = write_jsonl(tmp_path / "held_out.jsonl", records(seed=1, count=32))
    flags = {"model": str(model_path), "data": str(train), "method": "full", "epochs": 3.0, "batch_size": 8}
    cold = run_sft(resolve(None, "sft", flags | {"learning_rate": 2e-4, "save_steps": 1000}), tmp_path / "cold").final
    before = measure(cold, held_out)
    print("\n" + before.row("cold start"))

    def rl(judge_reward: bool) -> Path:
        flags = {"model": str(cold), "data": str(fresh), "method": "full", "max_steps": STEPS, "batch_size": 4}
        flags |= {"generations": 4, "max_new_tokens": 96, "learning_rate": 2e-5, "save_steps": 1000}
        out = tmp_path / ("srpo" if judge_reward else "grpo")
        run_rl(resolve(None, "rl", flags | {"judge_reward": judge_reward}, schema=RLConfig), out)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        print(f"{out.name} think-on rate per step: " + " ".join(f"{r['think_on_rate']:.2f}" for r in rows))
        return out / "final"

    srpo = measure(rl(judge_reward=True), held_out)
    print(srpo.row("Step-SRPO"))
    grpo = measure(rl(judge_reward=False), held_out)
    print(before.row("cold start"), srpo.row("Step-SRPO"), grpo.row("judge reward off"), sep="\n")

    def learned(after: Measure) -> bool:
        return (
            after.reward >= before.reward + 0.1
            and after.think_on_easy <= before.think_on_easy - 0.25
            and after.correct_hard >= before.correct_hard - 0.05
        )

    assert before.think_on_easy >= 0.2, "the cold start should think on easy problems too (else nothing to learn)"
    assert before.correct_hard >= 0.5 and before.correct_easy >= 0.5, "the model must be able to do the task"
    assert learned(srpo), (before, srpo)
    assert not learned(grpo), (before, grpo)  # the judge reward is what teaches the decision
