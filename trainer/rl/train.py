"""Step-SRPO (`katpilot train rl`): GRPO with a judge reward and an answer reward, each reaching the
tokens it is about.

Each step: a batch of prompts, G rollouts each sampled from the policy in auto mode (`rollouts`),
parsed by serving's gate into token segments (`segments`), rewarded (`rewards`), turned into
group-normalised answer and judge advantages and per-token advantages (`objective`), and one
gradient step on the clipped surrogate.

The loop is `transformers.Trainer` (as TRL's `GRPOTrainer` is), with generation and the loss in
`compute_loss`: the optimizer, scheduler, gradient accumulation, checkpoints and exact resume (RNG
included, so the rollouts after a resume are the ones the killed run would have drawn), DDP under
`torchrun`/`accelerate launch`, and the run directory are SFT's. Not TRL's `GRPOTrainer`: its
`_compute_loss` does take (batch, tokens) advantages, but its normalisation has no place for the
decoupled mode-tag term, and its generation and reward plumbing would all be overridden; TRL stays
a test dependency that our numbers are checked against.

One gradient step per generation (TRL's default `num_iterations = 1`): the old policy is the current
one, so the ratio is 1 and the clip fraction 0; the gradient is the policy gradient all the same.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError
from trainer import run_dir
from trainer.config import Resolved, RLConfig
from trainer.progress import metrics_callback, replace_default_display
from trainer.rl.llama_rollouts import LlamaCppSampler, unsuitable
from trainer.rl.objective import LossSettings, completion_logps, group_advantages, policy_loss, token_advantages
from trainer.rl.prompts import RLPrompt, load_prompts
from trainer.rl.rewards import RewardSettings, group_rewards
from trainer.rl.rollouts import RolloutBatch, Sampling, generate
from trainer.sft import Rows, finish, save_final, train, trainable_student, training_arguments

TABLE = "rl"

PANELS: tuple[run_dir.Panel, ...] = (
    ("loss", ("loss",)),
    ("rewards", ("reward_",)),
    ("think-on rate", ("think_on_rate", "think_on_rate/")),
    ("tokens per rollout", ("tokens_",)),
    ("KL, clipped", ("kl", "clip_fraction")),
    ("grad norm", ("grad_norm",)),
    ("tokens/s", ("tokens_per_s",)),
)


@dataclass(frozen=True)
class RLResult:
    out: Path
    prompts: int
    skipped: int  # without a verifier, or longer than max_length
    steps: int
    final: Path
    resumed: bool


def run_rl(resolved: Resolved, out: Path, callbacks: Sequence[Any] = ()) -> RLResult:
    """Train (or resume) the policy; write final/ and the report."""
    import torch
    from transformers import Trainer, set_seed

    from trainer.mtp import carry_heads_on_save

    if not isinstance(resolved.config, RLConfig):
        raise TypeError("run_rl needs an RLConfig")
    cfg: RLConfig = resolved.config
    if not cfg.model or not cfg.data:
        raise KatpilotError("rl needs a model and data", "give --model and --data (a dataset or an eval suite)")
    loaded = load_prompts(cfg.data, cfg.seed)  # bad data fails before the model loads
    resumed = run_dir.prepare(out, resolved, TABLE)
    set_seed(cfg.seed)
    model, tokenizer = trainable_student(cfg)
    prompts = [p for p in loaded.prompts if _prompt_length(tokenizer, p, cfg) <= cfg.max_length]
    if not prompts:
        raise KatpilotError(f"every prompt is longer than max_length {cfg.max_length}", "raise --max-length")
    skipped = loaded.skipped + len(loaded.prompts) - len(prompts)
    sampling = Sampling(cfg.generations, cfg.max_new_tokens, cfg.temperature, cfg.top_p)
    rewards = RewardSettings(cfg.format_weight, cfg.judge_margin, cfg.label_weight)
    loss_settings = LossSettings(
        cfg.loss_type, cfg.epsilon, cfg.epsilon_high, cfg.beta, cfg.mode_weight, cfg.max_new_tokens
    )
    reference = _reference(model, cfg)
    sampler, sampler_note = _sampler(model, cfg, out)
    metrics = run_dir.MetricsLog(out)

    class StepSRPO(Trainer):
        loss_is_scaled_for_ga = False  # a per-micro-batch loss: the Trainer divides by GA

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:  # inputs: the step's list of RLPrompt (the collator keeps them as they are)
            policy = self.accelerator.unwrap_model(model)
            started = time.perf_counter()
            if sampler is not None:
                batch = sampler.generate(policy, tokenizer, inputs, cfg.system_prompt, sampling)
            else:  # in the loss's precision: accelerate wraps the model's forward in autocast, and
                with self.accelerator.autocast():  # a PEFT model's generate goes around that forward
                    batch = generate(policy, tokenizer, inputs, cfg.system_prompt, sampling)
            answer, judge, values = score(inputs, batch, cfg, rewards)
            values["seconds_rollouts"] = time.perf_counter() - started  # sampling and scoring, of the step's time
            answer_adv = group_advantages(answer, cfg.generations, cfg.scale_rewards)
            judge_adv = group_advantages(judge, cfg.generations, cfg.scale_rewards) if cfg.judge_reward else None
            width = batch.completion_ids.shape[1]
            advantages, mode_mask = token_advantages([s.labels for s in batch.segments], answer_adv, judge_adv, width)
            device = batch.completion_ids.device
            logps = completion_logps(
                model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask, cfg.temperature
            )
            ref_logps = None
            if cfg.beta:
                with torch.no_grad(), reference(policy) as ref_model:
                    ref_logps = completion_logps(
                        ref_model,
                        batch.prompt_ids,
                        batch.prompt_mask,
                        batch.completion_ids,
                        batch.completion_mask,
                        cfg.temperature,
                    )
            batch_tokens = self.accelerator.reduce(batch.completion_mask.sum().float(), reduction="sum")
            parts = policy_loss(
                logps,
                None,
                advantages.to(device),
                batch.completion_mask,
                loss_settings,
                mode_mask.to(device),
                ref_logps,
                batch_tokens,
                self.accelerator.num_processes,
            )
            metrics.tokens += batch.tokens
            metrics.add_values(values | {"kl": parts.kl, "clip_fraction": parts.clip_fraction})
            return parts.loss

    trainer = StepSRPO(
        model=model,
        args=training_arguments(cfg, out),
        train_dataset=Rows(prompts),
        data_collator=_as_is,
        callbacks=[metrics_callback(metrics, "rl"), *carry_heads_on_save(Path(cfg.model), cfg.method), *callbacks],
    )
    replace_default_display(trainer)
    result = train(trainer, resumed)
    final = save_final(trainer, model, tokenizer, cfg, out)
    shutil.rmtree(out / "rollouts", ignore_errors=True)  # llama.cpp's copies: kept only for a resume
    steps = int(result.global_step)
    kinds = Counter(p.kind for p in prompts)
    facts = [
        f"policy `{cfg.model}`, {cfg.method}"
        + (f" (rank {cfg.lora_rank}, alpha {cfg.lora_alpha})" if cfg.method == "lora" else ""),
        f"data `{cfg.data}`: {len(prompts)} prompts ("
        + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        + f"), {skipped} skipped (no verifier, or longer than {cfg.max_length} tokens)",
        f"{steps} steps of {cfg.batch_size} prompts x {cfg.generations} rollouts of up to {cfg.max_new_tokens} "
        f"tokens (temperature {cfg.temperature:g}), learning rate {cfg.lr:g}, seed {cfg.seed}",
        f"rollouts: {sampler_note}",
        f"loss {cfg.loss_type}, epsilon {cfg.epsilon:g}/{cfg.epsilon_high or cfg.epsilon:g}, beta {cfg.beta:g}, "
        f"rewards scaled by {cfg.scale_rewards}",
        f"answer reward: verifier + {cfg.format_weight:g} x format; judge reward: "
        + (
            f"group evidence (margin {cfg.judge_margin:g}) + {cfg.label_weight:g} x label; "
            f"mode tag weight {cfg.mode_weight:g}"
            if cfg.judge_reward
            else "off (every token gets the answer advantage)"
        ),
        f"final model: `{final}`",
    ]
    run_dir.write_report(out, f"Step-SRPO run {out.name}", facts, PANELS)
    finish(trainer)
    return RLResult(out, len(prompts), skipped, steps, final, resumed)


def _sampler(model: Any, cfg: RLConfig, out: Path) -> tuple[LlamaCppSampler | None, str]:
    """llama.cpp's sampler where asked, or under `auto` where it qualifies; (None, why) for transformers."""
    if cfg.rollouts == "transformers":
        return None, "transformers (as configured)"
    reason = unsuitable(cfg.model, cfg.method, model)
    if reason is None:
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        workdir = out / "rollouts" / f"rank{rank}"
        sampler = LlamaCppSampler(Path(cfg.model), workdir, cfg.max_length + cfg.max_new_tokens + 8, cfg.rollout_jobs)
        return sampler, "llama.cpp (the base as f16 GGUF, the adapter exported every step)"
    if cfg.rollouts == "llama.cpp":
        raise KatpilotError(
            f"rollouts = llama.cpp is not possible here: {reason}", "use rollouts = auto or transformers"
        )
    return None, f"transformers (llama.cpp not used: {reason})"


def score(
    prompts: Sequence[RLPrompt], batch: RolloutBatch, cfg: RLConfig, settings: RewardSettings
) -> tuple[Any, Any, dict[str, float]]:
    """(answer rewards, judge rewards) as (N,) tensors, and the step's measurements."""
    import torch

    answer: list[float] = []
    judge: list[float] = []
    correct: list[float] = []
    formatted: list[float] = []
    g = cfg.generations
    for i, prompt in enumerate(prompts):
        group = batch.segments[i * g : (i + 1) * g]
        rewards = group_rewards(prompt.item, group, prompt.label, settings)
        answer += rewards.answer
        judge += rewards.judge
        correct += rewards.correct
        formatted += rewards.formatted
    n = len(batch.segments)
    on = [s.mode == "on" for s in batch.segments]
    values = {
        "reward_answer": sum(answer) / n,
        "reward_correct": sum(correct) / n,
        "reward_format": sum(formatted) / n,
        "reward_judge": sum(judge) / n,
        "think_on_rate": sum(on) / n,
        "tokens_judge": sum(s.count("judge") for s in batch.segments) / n,
        "tokens_think": sum(s.count("think") for s in batch.segments) / n,
        "tokens_answer": sum(s.count("answer") for s in batch.segments) / n,
    }
    for key, rows in _by(prompts, g).items():  # think-on rate per task kind and per difficulty level
        values[f"think_on_rate/{key}"] = sum(on[r] for r in rows) / len(rows)
    return torch.tensor(answer), torch.tensor(judge), values


def _by(prompts: Sequence[RLPrompt], g: int) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        rows = list(range(i * g, (i + 1) * g))
        groups.setdefault(prompt.kind, []).extend(rows)
        if prompt.level:
            groups.setdefault(f"level{prompt.level}", []).extend(rows)
    return groups


def _prompt_length(tokenizer: Any, prompt: RLPrompt, cfg: RLConfig) -> int:
    from trainer.chat_data import prompt_text

    return len(
        tokenizer(prompt_text(tokenizer, prompt.messages, cfg.system_prompt), add_special_tokens=False)["input_ids"]
    )


def _reference(model: Any, cfg: RLConfig) -> Any:
    """A context manager giving the reference model: under LoRA the policy with its adapters off (no
    second copy); under full fine-tuning a frozen copy of the starting weights, made only when beta > 0."""
    import contextlib
    import copy

    if not cfg.beta:
        return None
    if cfg.method == "lora":
        return lambda policy: _adapters_off(policy)
    frozen = copy.deepcopy(model).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return lambda policy: contextlib.nullcontext(frozen.to(next(policy.parameters()).device))


def _adapters_off(policy: Any) -> Any:
    import contextlib

    @contextlib.contextmanager
    def off() -> Any:
        with policy.disable_adapter():
            yield policy

    return off()


def _as_is(rows: list[Any]) -> Any:
    """The collator: a step's prompts stay RLPrompt objects (generation tokenizes them)."""
    return rows
