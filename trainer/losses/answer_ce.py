"""Next-token cross-entropy computed on the labelled positions only.

Why: the output layer is a large share of a small model's compute (SmolLM2-135M: a 49,152 x 576
projection, about a fifth of its forward pass), and a chat record's labels are the assistant's
reply alone, a fifth of its tokens or less. transformers' own loss projects every position and
then ignores most of them; passing the label positions as a boolean `logits_to_keep` projects only
those (transformers does the slicing; what is ours is choosing the positions and the sum).

The value is the model's own loss: the same shift (position i predicts label i + 1), the same
normalisation (the sum over labelled tokens divided by `num_items_in_batch` when the Trainer counts
them across gradient accumulation, else their mean).
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100  # labels that take no part in the loss, as in transformers


def labelled_positions(labels: Any) -> Any:
    """A (batch, length) bool mask of the positions whose next token is a label (the last never is)."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def answer_only_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> tuple[Any, int]:
    """(loss, labelled tokens) for a causal LM batch with `input_ids`, `attention_mask` and `labels`."""
    loss, count, _ = answer_only_forward(model, inputs, num_items_in_batch)
    return loss, count


def answer_only_forward(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None, output_hidden_states: bool = False
) -> tuple[Any, int, Any]:
    """`answer_only_loss` and the model's outputs (their logits are the labelled positions' only;
    `output_hidden_states` keeps every position's states, as the MTP heads read them)."""
    import torch.nn.functional as F

    labels = inputs["labels"]
    keep = labelled_positions(labels)
    targets = labels[:, 1:][keep[:, :-1]]
    packed = {"position_ids": inputs["position_ids"]} if "position_ids" in inputs else {}  # trainer.packing's rows
    outputs = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs.get("attention_mask"),
        logits_to_keep=keep,
        use_cache=False,  # training keeps no cache; with one, transformers would not see packed records
        **packed,
        output_hidden_states=output_hidden_states,
    )
    logits = outputs.logits
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum")
    count = int(targets.numel())
    divisor = num_items_in_batch if num_items_in_batch is not None else max(count, 1)
    return total / divisor, count, outputs
