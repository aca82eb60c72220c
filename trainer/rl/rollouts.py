"""Rollouts: G sampled completions per prompt from the policy in transformers, batched, in auto mode
(the policy writes its own judge and mode; nothing is forced), each taken apart token by token.

Prompts are rendered as serving renders them (the chat template with serving's system prompt) and
left-padded; a completion ends at the tokenizer's end-of-turn token (kept: its probability is
trained, so the model learns to stop) or at `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainer.chat_data import prompt_text
from trainer.rl.prompts import RLPrompt
from trainer.rl.segments import TokenSegments, token_segments, token_texts


@dataclass(frozen=True)
class Sampling:
    group_size: int = 4  # G: rollouts per prompt
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class RolloutBatch:
    """N = prompts x G rows, group after group."""

    prompt_ids: Any  # (N, P) left-padded
    prompt_mask: Any
    completion_ids: Any  # (N, T) right-padded
    completion_mask: Any  # 1 up to and including the end-of-turn token
    segments: list[TokenSegments]
    group_size: int

    @property
    def tokens(self) -> int:
        return int(self.completion_mask.sum())


def generate(
    model: Any, tokenizer: Any, prompts: Sequence[RLPrompt], system_prompt: str, sampling: Sampling
) -> RolloutBatch:
    """Sample with `model.generate`, the whole batch at once."""
    import torch

    prompt_ids, prompt_mask = tokenize_prompts(tokenizer, prompts, system_prompt, sampling.group_size)
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    was_training = model.training
    model.eval()  # no dropout while sampling; the KV cache on
    try:
        with torch.no_grad():
            out = model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=0,
                max_new_tokens=sampling.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
            )
    finally:
        model.train(was_training)
    rows = []
    for row in out[:, prompt_ids.shape[1] :].tolist():
        end = row.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in row else len(row)
        rows.append(row[: end + 1])  # up to and including the end-of-turn token
    return assemble(
        tokenizer,
        prompt_ids,
        prompt_mask,
        rows,
        [len(r) > 0 and r[-1] == tokenizer.eos_token_id for r in rows],
        sampling.group_size,
    )


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[RLPrompt], system_prompt: str, group_size: int
) -> tuple[Any, Any]:
    """Each prompt rendered as serving renders it, repeated `group_size` times, left-padded: (ids, mask)."""
    rendered = [prompt_text(tokenizer, p.messages, system_prompt) for p in prompts]
    repeated = [text for text in rendered for _ in range(group_size)]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(repeated, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    return batch["input_ids"], batch["attention_mask"]


def assemble(
    tokenizer: Any, prompt_ids: Any, prompt_mask: Any, rows: list[list[int]], ended: list[bool], group_size: int
) -> RolloutBatch:
    """A batch from sampled completions (an ended one's last id is its end token), right-padded, each
    taken apart by the gate token by token. Shared by every sampler, so they label tokens alike."""
    import torch

    width = max(1, max(len(r) for r in rows))
    completion = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=prompt_mask.dtype)
    segments = []
    for i, (row, end) in enumerate(zip(rows, ended, strict=True)):
        completion[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
        text_ids = row[:-1] if end else row
        parsed = token_segments(token_texts(tokenizer, text_ids))  # the text the gate sees: up to the end token
        labels = parsed.labels + (["answer"] if end else [])  # the end token closes the answer
        segments.append(TokenSegments(labels, parsed.parts, parsed.well_formed, parsed.mode_by_tag))
    device = prompt_ids.device
    return RolloutBatch(prompt_ids, prompt_mask, completion.to(device), mask.to(device), segments, group_size)
