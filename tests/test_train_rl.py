"""Step-SRPO: token segments read by serving's gate, the rewards, segment-wise advantages with the
decoupled mode tag, TRL's numbers where they should agree, and runs with their directory."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from katpilot import gate  # noqa: E402
from katpilot.eval.items import EvalItem  # noqa: E402
from trainer.rl.objective import LossSettings, group_advantages, policy_loss, token_advantages  # noqa: E402
from trainer.rl.rewards import RewardSettings, group_rewards, right_mode  # noqa: E402
from trainer.rl.segments import TokenSegments, token_segments, token_texts  # noqa: E402

OFF = [
    "<judge>",
    "\n",
    "easy",
    " one",
    "\n",
    "</judge>",
    "\n",
    "<think_off>",
    "\n",
    "<answer>",
    "\n",
    "4",
    "\n",
    "</answer>",
]
ON = ["<judge>", "hard", "</judge>", "<think_on>", "<think>", "2", "+", "2", "</think>", "<answer>", "4", "</answer>"]


def test_each_token_of_a_think_off_rollout_gets_its_segment() -> None:
    seg = token_segments(OFF)
    assert seg.labels == ["judge"] * 7 + ["mode"] + ["answer"] * 6
    assert seg.mode == "off" and seg.mode_by_tag and seg.well_formed and seg.parts.answer == "4"


def test_each_token_of_a_think_on_rollout_gets_its_segment() -> None:
    seg = token_segments(ON)
    assert seg.labels == ["judge"] * 3 + ["mode"] + ["think"] * 5 + ["answer"] * 3
    assert seg.mode == "on" and seg.mode_by_tag and seg.parts.think == "2+2"


def test_tags_written_as_plain_sub_words_are_found_where_the_gate_finds_them() -> None:
    seg = token_segments(["<jud", "ge>", "x", "</judge>", "<think", "_off", ">", "<answer>", "4", "</ans", "wer>"])
    assert seg.labels == ["judge"] * 4 + ["mode"] * 3 + ["answer"] * 4
    assert seg.well_formed


def test_a_rollout_that_never_decides_with_a_tag() -> None:
    seg = token_segments(["<judge>", "x", "</judge>", "<answer>", "4", "</answer>"])
    assert seg.labels == ["judge"] * 3 + ["answer"] * 3
    assert seg.mode == "off" and not seg.mode_by_tag and not seg.well_formed
    plain = token_segments(["The", " answer", " is", " 4"])
    assert plain.labels == ["answer"] * 4 and not plain.mode_by_tag
    late = token_segments(["<answer>", "4", "</answer>", "<think_on>"])  # a decision after the answer began
    assert late.labels[-1] == "mode" and not late.mode_by_tag and late.mode == "off"


def test_a_real_tokenizer_split_maps_back_exactly(smol_checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smol_checkpoint)
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(gate.KAT_TAGS)})
    text = gate.render_kat(gate.Parts("easy 🙂 façade", "on", "2 € + 2 €", "4 € 😀"))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_texts(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=False) == text
    assert "" in pieces  # an emoji's first byte tokens add nothing until the character is whole
    seg = token_segments(pieces)
    assert len(seg.labels) == len(ids)
    mode_ids = [ids[i] for i, label in enumerate(seg.labels) if label == "mode"]
    assert mode_ids == [tokenizer.convert_tokens_to_ids(gate.THINK_ON)]
    think = tokenizer.decode([ids[i] for i, label in enumerate(seg.labels) if label == "think"])
    assert think.strip() == "<think>\n2 € + 2 €\n</think>"


# -- rewards ---------------------------------------------------------------------------------------


def _rollout(mode: str, answer: str) -> TokenSegments:
    text = gate.render_kat(gate.Parts("why", mode, "steps" if mode == "on" else "", answer))  # type: ignore[arg-type]
    return token_segments([text])


ITEM = EvalItem("q", "What is 2+2?", "numeric", expected="4")


def test_the_judge_reward_follows_the_groups_evidence_with_a_margin_for_think_off() -> None:
    group = [_rollout("off", "4"), _rollout("off", "4"), _rollout("on", "4"), _rollout("on", "5")]
    r = group_rewards(ITEM, group, None, RewardSettings())
    assert r.correct == [1, 1, 1, 0] and r.formatted == [1, 1, 1, 1]
    assert r.answer == pytest.approx([1.2, 1.2, 1.2, 0.2])
    assert r.right_mode == "off" and r.judge == [1, 1, 0, 0]
    labelled = group_rewards(ITEM, group, "on", RewardSettings(label_weight=0.5))
    assert labelled.judge == [1, 1, 0.5, 0.5]
    assert right_mode([1, 0], [1, 1], margin=0.1) == "on"  # 0.5 against 1.0: thinking pays
    assert right_mode([1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 0.0], margin=0.2) == "off"  # 0.75 vs 0.9
    assert right_mode([], [1, 1], margin=0.1) is None  # off might pass as often: thinking may not pay
    assert right_mode([1, 1, 1, 1], [], margin=0.1) == "off"  # no pass rate of on could beat it by the margin
    assert right_mode([1, 0], [], margin=0.1) is None  # on might pass more often
    assert right_mode([], [0, 0, 0], margin=0.1) == "off"  # thinking did not pay, whatever off would do
    assert right_mode([], [], margin=0.1) is None
    one_mode = group_rewards(ITEM, group[2:], None, RewardSettings())
    assert one_mode.right_mode is None and one_mode.judge == [0, 0]  # no evidence, no label: no judge signal
    all_off = group_rewards(ITEM, group[:2], None, RewardSettings())
    assert all_off.right_mode == "off" and all_off.judge == [1, 1]  # a group that got it right without thinking
    undecided = token_segments(["4"])
    # no decision, no judge reward, and no evidence: the one decided rollout got it right without thinking
    assert group_rewards(ITEM, [undecided, group[0]], "off", RewardSettings()).judge == [0, 1.5]
    assert group_rewards(ITEM, [undecided, group[3]], "off", RewardSettings()).judge == [0, 0]  # on, wrong: off


# -- advantages and the loss -------------------------------------------------------------------------


def test_group_advantages_are_reward_minus_group_mean_over_std() -> None:
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv = group_advantages(rewards, 2, "group")
    assert adv.tolist() == pytest.approx([0.5 / (0.7071068 + 1e-4), -0.5 / (0.7071068 + 1e-4), 0.0, 0.0], rel=1e-5)
    assert group_advantages(rewards, 2, "none").tolist() == [0.5, -0.5, 0.0, 0.0]
    batch_std = float(rewards.std())
    assert group_advantages(rewards, 2, "batch")[0].item() == pytest.approx(0.5 / (batch_std + 1e-4))


def test_each_token_receives_its_segments_advantage() -> None:
    labels = [["judge", "mode", "think", "answer"], ["judge", "mode", "answer"]]
    adv, mode_mask = token_advantages(labels, torch.tensor([1.0, -1.0]), torch.tensor([0.5, -0.5]), width=5)
    assert adv.tolist() == [[0.5, 0.5, 1.0, 1.0, 0.0], [-0.5, -0.5, -1.0, 0.0, 0.0]]
    assert mode_mask.tolist() == [[False, True, False, False, False], [False, True, False, False, False]]
    off, _ = token_advantages(labels, torch.tensor([1.0, -1.0]), None, width=4)  # judge reward off
    assert off.tolist() == [[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, 0.0]]


def _mode_gradient(length: int, settings: LossSettings) -> float:
    logps = torch.zeros(1, length, requires_grad=True)
    labels = ["judge", "mode"] + ["answer"] * (length - 2)
    adv, mode_mask = token_advantages([labels], torch.tensor([1.0]), torch.tensor([1.0]), width=length)
    policy_loss(logps, None, adv, torch.ones(1, length), settings, mode_mask).loss.backward()
    assert logps.grad is not None
    return float(logps.grad[0, 1])


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_the_mode_tokens_weight_does_not_shrink_with_the_completions_length(loss_type: str) -> None:
    settings = LossSettings(loss_type=loss_type, mode_weight=1.0, max_completion_length=1000)
    short, long = _mode_gradient(10, settings), _mode_gradient(1000, settings)
    assert short == pytest.approx(long) == pytest.approx(-1.0)  # d(-ratio * A)/d logp at ratio 1, A = 1
    coupled = LossSettings(loss_type=loss_type, mode_weight=0.0, max_completion_length=1000)
    short, long = _mode_gradient(10, coupled), _mode_gradient(1000, coupled)
    if loss_type != "dr_grpo":  # dr_grpo divides by a constant: plain GRPO's 1/length is what starves
        assert short == pytest.approx(100 * long)


def test_the_clipped_surrogate_and_the_kl() -> None:
    logps = torch.log(torch.tensor([[0.5, 0.5]]))
    old = torch.log(torch.tensor([[0.25, 0.5]]))  # ratio 2 on the first token
    adv = torch.tensor([[1.0, -1.0]])
    parts = policy_loss(logps, old, adv, torch.ones(1, 2), LossSettings(loss_type="bnpo", epsilon=0.2))
    assert float(parts.loss) == pytest.approx((-1.2 + 1.0) / 2)  # clipped to 1.2 where the advantage is positive
    assert parts.clip_fraction == pytest.approx(0.5)
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    with_kl = policy_loss(logps, old, adv, torch.ones(1, 2), LossSettings(loss_type="bnpo", beta=0.1), ref_logps=ref)
    k3 = 0.5 - torch.log(torch.tensor(0.5)).item() - 1  # exp(d) - d - 1 at d = log(0.25/0.5)
    assert with_kl.kl == pytest.approx(k3 / 2)
    assert float(with_kl.loss) == pytest.approx((-1.2 + 1.0 + 0.1 * k3) / 2)


# -- TRL's numbers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(smol_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from quant_helpers import tiny_checkpoint

    return tiny_checkpoint("llama", smol_checkpoint, tmp_path_factory.mktemp("tiny-rl"))


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_advantages_and_loss_equal_trls_with_the_judge_reward_off(tiny: Path, tmp_path: Path, loss_type: str) -> None:
    """On a minimal `GRPOTrainer` (TRL's own code: its `_generate_and_score_completions` samples and
    scores a batch with fixed rewards, its `_compute_loss` gives the loss), our group advantages and our
    loss on the same rollouts, one advantage per sequence and the mode tag not decoupled, are TRL's."""
    import trl  # the dev extra pins it
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.rl.objective import completion_logps

    assert trl.__version__ == "1.16.0"  # the internals called below are that version's
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny)
    rewards = [1.0, 0.0, 0.5, 0.5, 2.0, -1.0, 0.0, 0.0]  # four groups of two; one with equal rewards

    def fixed(completions: list[object], **kwargs: object) -> list[float]:
        return rewards[: len(completions)]

    config = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=8,
        num_generations=2,
        max_completion_length=6,
        loss_type=loss_type,
        use_cpu=True,
        bf16=False,
        report_to=[],
        temperature=1.0,
        seed=0,
    )
    prompts = ["What is 2+2?", "Name a colour.", "Say hi.", "Count to three."]
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=[fixed],
        args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([{"prompt": p} for p in prompts for _ in range(2)])
    # an older policy than the current one (as after a few updates), so ratios leave 1 and some clip
    with torch.no_grad():
        now = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
            batch["completion_ids"].shape[1],
        )[0]
    batch["old_per_token_logps"] = now + 0.3 * torch.randn(now.shape, generator=torch.Generator().manual_seed(0))
    theirs_loss = trainer._compute_loss(trainer.model, batch)
    theirs_loss.backward()
    theirs_grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    trainer.model.zero_grad()

    ours_adv = group_advantages(torch.tensor(rewards), 2, "group")
    assert torch.allclose(batch["advantages"], ours_adv, atol=1e-6), (batch["advantages"], ours_adv)
    logps = completion_logps(
        trainer.model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"]
    )
    width = batch["completion_ids"].shape[1]
    settings = LossSettings(loss_type=loss_type, epsilon=0.2, mode_weight=0.0, max_completion_length=6)
    ours = policy_loss(
        logps,
        batch["old_per_token_logps"],
        ours_adv.unsqueeze(1).expand(-1, width),
        batch["completion_mask"],
        settings,
        batch_tokens=batch["num_items_in_batch"],
    )
    assert float(ours.loss.detach()) == pytest.approx(float(theirs_loss.detach()), rel=1e-5)
    assert abs(float(theirs_loss.detach())) > 1e-3 and 0 < ours.clip_fraction < 1  # not a trivial zero; some clipped
    ours.loss.backward()
    ours_grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert len(ours_grads) == len(theirs_grads) > 0
    for mine, theirs in zip(ours_grads, theirs_grads, strict=True):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-7)


# -- runs ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arithmetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from katpilot import config as config_mod
    from trainer.data.command import DataRun, run_data

    out = tmp_path_factory.mktemp("rl-data") / "arith"
    settings = config_mod.load_settings().settings
    run_data(settings, DataRun(out=out, kinds=("arithmetic",), teacher="programmatic", limit=32))
    return out


@pytest.fixture(scope="module")
def policy(tiny: Path, arithmetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after a short cold start (about 100 s): sampled at 0.7 it writes a mode tag about
    half the time, often the labelled one, not yet a well-formed response; so the judge reward
    (label agreement) spreads within groups, which is what gives RL a gradient."""
    from trainer.config import resolve
    from trainer.sft import run_sft

    flags = {"model": str(tiny), "data": str(arithmetic_data), "method": "full", "max_steps": 120, "batch_size": 8}
    out = tmp_path_factory.mktemp("cold") / "run"
    return run_sft(resolve(None, "sft", flags | {"learning_rate": 3e-3, "save_steps": 1000}), out).final


def _rl(policy: Path, data: Path, **overrides: object):  # type: ignore[no-untyped-def]
    from trainer.config import RLConfig, resolve

    flags = {"model": str(policy), "data": str(data), "method": "full", "max_steps": 2, "batch_size": 4}
    flags |= {"generations": 4, "max_new_tokens": 40, "temperature": 0.7, "learning_rate": 1e-3, "save_steps": 1}
    return resolve(None, "rl", flags | overrides, schema=RLConfig)


@pytest.mark.timeout(900)  # the first one builds the policy fixture (about 100 s alone on 2 cores)
@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_trains_and_writes_its_directory(
    policy: Path, arithmetic_data: Path, tmp_path: Path, method: str
) -> None:
    from trainer import run_dir
    from trainer.rl.train import run_rl

    out = tmp_path / "run"
    result = run_rl(_rl(policy, arithmetic_data, method=method, beta=0.05 if method == "lora" else 0.0), out)
    from trainer.rl.prompts import load_prompts

    assert result.steps == 2 and not result.resumed
    loaded = load_prompts(str(arithmetic_data))
    assert result.prompts + result.skipped == len(loaded.prompts) + loaded.skipped and result.prompts > 0
    rows = run_dir.read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward_answer", "reward_correct", "reward_format", "reward_judge", "think_on_rate"):
        assert all(0 <= r[key] <= 2 for r in rows), key
    assert all(key in rows[0] for key in ("tokens_judge", "tokens_think", "tokens_answer", "kl", "clip_fraction"))
    assert all("think_on_rate/arithmetic" in r and "grad_norm" in r and r["tokens_per_s"] > 0 for r in rows)
    assert any(r["grad_norm"] > 0 for r in rows), rows  # the rewards differ within groups: there is a gradient
    if method == "lora":
        assert rows[-1]["kl"] > 0  # against the base with adapters off: the policy moved after step 1
    report = (out / "report.md").read_text()
    assert "Step-SRPO run" in report and "judge reward: group evidence" in report
    if method == "lora":  # `rollouts = auto` on CPU, a cold-started checkpoint: llama.cpp samples
        assert "rollouts: llama.cpp" in report and not (out / "rollouts").exists()
    else:
        assert "rollouts: transformers (llama.cpp not used: it needs a LoRA run" in report
    assert (out / run_dir.PLOT_FILE).stat().st_size > 1000
    config = (out / run_dir.CONFIG_FILE).read_text()
    assert "[rl]" in config and 'loss_type = "dapo"  # default' in config and "generations = 4  # flag" in config
    assert (result.final / ("adapter_model.safetensors" if method == "lora" else "model.safetensors")).is_file()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("jobs", [1, 2])
def test_llama_cpp_rollouts_sample_the_policy_with_its_current_adapter(
    policy: Path, arithmetic_data: Path, tmp_path: Path, jobs: int
) -> None:
    """The adapter exported this step is the one llama.cpp samples with: near-greedy rollouts follow the
    policy's own argmax (transformers, adapters on) and not the base's (adapters off); the ids come
    back as the tokenizer's, taken apart by the gate like any rollout. With two engines sampling at
    once (`rollout_jobs`), each row still answers its own prompt, in order."""
    import torch

    from trainer.chat_data import prompt_text
    from trainer.rl.llama_rollouts import LlamaCppSampler, unsuitable
    from trainer.rl.prompts import load_prompts
    from trainer.rl.rollouts import Sampling
    from trainer.sft import trainable_student

    cfg = _rl(policy, arithmetic_data, method="lora").config
    model, tokenizer = trainable_student(cfg)
    model.eval()  # no LoRA dropout in the forward passes compared below
    assert unsuitable(cfg.model, "lora", model) is None
    assert "LoRA run" in (unsuitable(cfg.model, "full", model) or "")
    torch.manual_seed(0)
    with torch.no_grad():  # an adapter that moves the argmax (a fresh one is zero: B = 0)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    prompts = load_prompts(str(arithmetic_data)).prompts[:2]
    sampler = LlamaCppSampler(policy, tmp_path, 600, jobs)
    batch = sampler.generate(model, tokenizer, prompts, cfg.system_prompt, Sampling(2, 24, temperature=1e-3))
    assert batch.completion_ids.shape[0] == 4 and batch.tokens > 0
    agree = {"on": 0, "off": 0}
    total = 0
    for row in range(4):
        n = int(batch.completion_mask[row].sum())
        ids = batch.completion_ids[row, :n].tolist()
        assert len(batch.segments[row].labels) == n
        prompt = prompt_text(tokenizer, prompts[row // 2].messages, cfg.system_prompt)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = torch.tensor([prompt_ids + ids])
        for state in ("on", "off"):
            with torch.no_grad():
                if state == "on":
                    logits = model(full).logits
                else:
                    with model.disable_adapter():
                        logits = model(full).logits
            predicted = logits[0, len(prompt_ids) - 1 : -1].argmax(-1).tolist()
            agree[state] += sum(a == b for a, b in zip(predicted, ids, strict=True))
        total += n
    assert agree["on"] >= 0.9 * total, (agree, total)  # f16 and llama.cpp's kernels: near ties may flip
    assert agree["off"] < 0.6 * total, (agree, total)


@pytest.mark.timeout(900)
def test_resume_after_a_kill_draws_the_same_rollouts_and_loss(
    policy: Path, arithmetic_data: Path, tmp_path: Path
) -> None:
    from train_fixtures import stop_at

    from trainer import run_dir
    from trainer.rl.train import run_rl

    resolved = _rl(policy, arithmetic_data, max_steps=3)
    run_rl(resolved, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run_rl(
            resolved, tmp_path / "cut", callbacks=[stop_at(2)]
        )  # killed before step 3, after the checkpoint of step 2
    assert run_rl(resolved, tmp_path / "cut").resumed
    whole = {r["step"]: r for r in run_dir.read_metrics(tmp_path / "whole")}
    cut = {r["step"]: r for r in run_dir.read_metrics(tmp_path / "cut")}
    assert sorted(cut) == [1, 2, 3]
    for key in ("loss", "reward_answer", "reward_judge", "tokens_answer", "grad_norm"):
        assert cut[3][key] == whole[3][key], key  # the RNG, data position and optimizer came back exactly


@pytest.mark.timeout(900)
def test_gradient_checkpointing_is_the_default_and_changes_no_figure(
    policy: Path, arithmetic_data: Path, tmp_path: Path
) -> None:
    """RL recomputes activations in the backward pass unless told not to (the memory it saves is
    measured in docs/train-rl.md); the rollouts, loss and gradient are the same either way."""
    from trainer import run_dir
    from trainer.rl.train import run_rl

    run_rl(_rl(policy, arithmetic_data, method="lora"), tmp_path / "default")
    run_rl(_rl(policy, arithmetic_data, method="lora", gradient_checkpointing=False), tmp_path / "kept")
    assert "gradient_checkpointing = true  # default" in (tmp_path / "default" / run_dir.CONFIG_FILE).read_text()
    default, kept = run_dir.read_metrics(tmp_path / "default"), run_dir.read_metrics(tmp_path / "kept")
    assert [r["step"] for r in default] == [r["step"] for r in kept] == [1, 2]
    for mine, theirs in zip(default, kept, strict=True):
        assert mine["reward_answer"] == theirs["reward_answer"] and mine["tokens_answer"] == theirs["tokens_answer"]
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4, abs=1e-6)
        assert mine["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-3) and mine["grad_norm"] > 0


def test_the_command_reports_missing_inputs_and_bad_data_in_one_line(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "katpilot", "train", "rl", "--out", str(tmp_path / "r"), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    proc = run()
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "rl needs a model and data" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "item": {"id": "x"}}) + "\n")
    proc = run("--model", "x", "--data", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "line 1: item.prompt must be a non-empty string" in proc.stderr
    item = {"id": "x", "prompt": "What is 2 + 2?", "verifier": "numeric", "expected": "4"}
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "item": item, "level": "hard"}) + "\n")
    proc = run("--model", "x", "--data", str(bad))
    assert proc.returncode == 2 and "line 1: level must be a whole number, not 'hard'" in proc.stderr, proc.stderr
    proc = run("--model", "x", "--data", "arithmetic", "--loss-type", "ppo")
    assert proc.returncode == 2 and "loss_type must be one of grpo, bnpo, dr_grpo, dapo" in proc.stderr
