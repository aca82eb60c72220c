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
    import torch

    rendered = [prompt_text(tokenizer, p.messages, system_prompt) for p in prompts]
    repeated = [text for text in rendered for _ in range(sampling.group_size)]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(repeated, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()  # no dropout while sampling; the KV cache on
    try:
        with torch.no_grad():
            out = model.generate(
                **batch,
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
    completion = out[:, batch["input_ids"].shape[1] :]
    is_end = completion == tokenizer.eos_token_id
    ended = is_end.any(dim=1)
    first_end = torch.where(
        ended, is_end.int().argmax(dim=1), torch.full_like(ended, completion.shape[1], dtype=torch.long)
    )
    positions = torch.arange(completion.shape[1], device=completion.device).unsqueeze(0)
    mask = (positions <= first_end.unsqueeze(1)).to(batch["attention_mask"].dtype)
    completion = torch.where(mask.bool(), completion, torch.full_like(completion, tokenizer.pad_token_id))
    segments = []
    for row, end in zip(completion.tolist(), first_end.tolist(), strict=True):
        texts = token_texts(tokenizer, row[:end])  # the text the gate sees: up to the end-of-turn token
        parsed = token_segments(texts)
        labels = parsed.labels + (["answer"] if end < len(row) else [])  # the end token closes the answer
        segments.append(TokenSegments(labels, parsed.parts, parsed.well_formed, parsed.mode_by_tag))
    return RolloutBatch(batch["input_ids"], batch["attention_mask"], completion, mask, segments, sampling.group_size)
