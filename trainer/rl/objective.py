"""Step-SRPO's objective: group advantages, segment-wise token advantages, the clipped surrogate.

Written by hand because no library has it: TRL's `GRPOTrainer` gives one advantage per sequence and
normalises every token alike. What matches TRL exactly (tested against its `_compute_loss`): the
group advantage (reward minus the group mean, over the group's or the batch's unbiased standard
deviation + 1e-4, or not scaled), the per-token ratio clipped to [1 - epsilon, 1 + epsilon_high],
the k3 KL estimate to the reference weighted by beta, and the four normalisations:

    grpo     each sequence's masked sum over its own length, averaged over sequences
    bnpo     masked sum over the masked token count of the micro-batch
    dr_grpo  masked sum over (sequences x max_completion_length)
    dapo     masked sum over the tokens of the whole generation batch (all processes)

What is ours: each token's advantage is its segment's (judge and mode tag: the judge advantage;
thinking and answer: the answer advantage), and the mode tag's loss is decoupled from the length
normalisation as Thinkless does: it leaves the normalised sum and comes back as `mode_weight` times
its mean over the sequences, so one decision token weighs the same in a 10-token and a 1,000-token
completion (under plain GRPO it weighs 1/length, and the decision starves on long answers).
`mode_weight = 0` puts it back among the other tokens (plain GRPO, as TRL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainer.rl.segments import Label

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALES = ("group", "batch", "none")
STD_EPSILON = 1e-4  # TRL's


@dataclass(frozen=True)
class LossSettings:
    loss_type: str = "dapo"  # TRL's default
    epsilon: float = 0.2
    epsilon_high: float = 0.0  # 0: the same as epsilon (DAPO's clip-higher uses 0.28)
    beta: float = 0.0  # KL to the reference (TRL's default 0: no reference needed)
    mode_weight: float = 1.0  # the decoupled mode-tag term; 0: no decoupling
    max_completion_length: int = 256  # dr_grpo's constant


def group_advantages(rewards: Any, group_size: int, scale: str = "group") -> Any:
    """(N,) advantages of (N,) rewards laid out group after group, as TRL computes them."""
    import torch

    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1).repeat_interleave(group_size)
    advantages = rewards - mean
    if scale == "none":
        return advantages
    if scale == "group":
        std = grouped.std(dim=1) if group_size > 1 else torch.zeros(grouped.shape[0], dtype=rewards.dtype)
        std = std.repeat_interleave(group_size)
    else:
        std = rewards.std() if rewards.numel() > 1 else torch.zeros((), dtype=rewards.dtype)
    return advantages / (std + STD_EPSILON)


def token_advantages(labels: Sequence[Sequence[Label]], answer: Any, judge: Any | None, width: int) -> tuple[Any, Any]:
    """((N, width) advantages, (N, width) mode-tag mask): judge and mode tokens get `judge` (or
    `answer` when the judge reward is off), thinking and answer tokens get `answer`."""
    import torch

    advantages = torch.zeros(len(labels), width, dtype=answer.dtype)
    mode_mask = torch.zeros(len(labels), width, dtype=torch.bool)
    for row, row_labels in enumerate(labels):
        for col, label in enumerate(row_labels[:width]):
            on_judge = label in ("judge", "mode")
            advantages[row, col] = judge[row] if on_judge and judge is not None else answer[row]
            mode_mask[row, col] = label == "mode"
    return advantages, mode_mask


@dataclass(frozen=True)
class LossParts:
    loss: Any  # the scalar to backpropagate
    policy: float  # the surrogate part
    kl: float  # mean k3 KL per token (0 without a reference)
    clip_fraction: float  # share of tokens whose ratio was clipped where it mattered


def policy_loss(
    logps: Any,
    old_logps: Any | None,
    advantages: Any,
    mask: Any,
    settings: LossSettings,
    mode_mask: Any | None = None,
    ref_logps: Any | None = None,
    batch_tokens: Any | None = None,
    processes: int = 1,
) -> LossParts:
    """The clipped surrogate of one micro-batch. `logps`, `old_logps`, `ref_logps`, `advantages`:
    (N, T) per completion token; `mask`: (N, T), 1 on real completion tokens. `batch_tokens`: dapo's
    denominator, the completion tokens of the whole generation batch over all processes."""
    import torch

    old = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old)
    low, high = 1 - settings.epsilon, 1 + (settings.epsilon_high or settings.epsilon)
    clipped = torch.clamp(ratio, low, high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    kl = torch.zeros_like(per_token)
    if settings.beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs the reference's log-probabilities")
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + settings.beta * kl
    mask = mask.to(per_token.dtype)
    if mode_mask is not None and settings.mode_weight > 0:
        mode_tokens = mask * mode_mask.to(mask.dtype)
        body = _normalise(per_token, mask - mode_tokens, settings, batch_tokens, processes)
        loss = body + settings.mode_weight * (per_token * mode_tokens).sum() / per_token.shape[0]
    else:
        loss = _normalise(per_token, mask, settings, batch_tokens, processes)
    region = ((ratio < low) & (advantages < 0)) | ((ratio > high) & (advantages > 0))
    count = mask.sum().clamp(min=1.0)
    return LossParts(
        loss=loss,
        policy=float(loss.detach()),
        kl=float((kl.detach() * mask).sum() / count),
        clip_fraction=float((region.to(mask.dtype) * mask).sum() / count),
    )


def _normalise(per_token: Any, mask: Any, settings: LossSettings, batch_tokens: Any | None, processes: int) -> Any:
    total = (per_token * mask).sum(dim=-1)
    if settings.loss_type == "grpo":
        return (total / mask.sum(dim=-1).clamp(min=1.0)).mean()
    if settings.loss_type == "bnpo":
        return total.sum() / mask.sum().clamp(min=1.0)
    if settings.loss_type == "dr_grpo":
        return total.sum() / (per_token.shape[0] * settings.max_completion_length)
    if settings.loss_type == "dapo":
        tokens = mask.sum() if batch_tokens is None else batch_tokens
        return total.sum() / (tokens.clamp(min=1.0) / processes)
    raise ValueError(f"unknown loss_type {settings.loss_type!r}")


def completion_logps(
    model: Any, prompt_ids: Any, prompt_mask: Any, completion_ids: Any, completion_mask: Any, temperature: float = 1.0
) -> Any:
    """(N, T) log-probabilities of the completion tokens under `model` at the sampling temperature (one
    forward pass; only the completion's logits are kept, so memory grows with T, not the prompt)."""
    import torch

    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask, completion_mask], dim=1)
    width = completion_ids.shape[1]
    logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=width + 1).logits
    logits = logits[:, :-1, :].float()  # position t predicts token t + 1
    if temperature != 1.0:  # a (N, T, vocab) copy: the largest tensor of the step, so only when needed
        logits = logits / temperature
    chosen = logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)
