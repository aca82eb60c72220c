"""Distillation losses: Universal Logit Distillation across tokenizers, forward KL and JSD within one.

Why ULD. KAT-V1 distils a teacher whose tokenizer differs from the student's (Qwen2.5-32B into a
smaller model; here anything into SmolLM2's 49,152-token BPE). KL needs one vocabulary: token i of
the teacher must be token i of the student. ULD (Boizard et al. 2024, "Towards Cross-Tokenizer
Distillation: the Universal Logit Distillation Loss for LLMs", arXiv 2402.12030) needs none. It is a
Wasserstein distance between the two next-token distributions with every transport cost taken as 1,
whose closed form is: sort both probability vectors in descending order, zero-pad the shorter
vocabulary, sum the absolute differences. It compares the *shape* of the two distributions (how
confident, how spread), not which token gets the mass (the cross-entropy on the student's own labels
says that), so it is invariant to any permutation of either vocabulary.

Alignment. Both models read the same answer text, tokenized two ways. The k-th answer position of
the student is paired with the k-th answer position of the teacher, and each row is cut to the
shorter count, as the authors' code does; the tokens do not line up one to one, which is the method's
known approximation.

Defaults and why:
- temperatures 1.0 for both sides: the authors' reference code (github.com/Nicolas-BZRD/llm-recipes,
  `configs/distillation.py`) defaults `student_temperature = teacher_temperature = 1`.
- lambda (`DEFAULT_ULD_WEIGHT`) 1.5: that same config's `distil_factor = 1.5`, also the value in the
  repository's example command; CE keeps weight 1.
- reduction "mean": the mean over every aligned position of the batch (a token-level mean, as
  transformers averages the CE it is added to). The reference code averages per row first and then
  over rows, which weighs a short answer's tokens more; "sum" lets a trainer divide by its own count
  (gradient accumulation across micro-batches).
- probabilities in float32 whatever the logits' dtype: summing 10^5 bf16 values loses
  the small differences the loss is made of.
- no temperature-squared factor (Hinton's scaling): neither the paper's ULD nor the reference code
  has one, and the KL / JSD here stay plain divergences; scale them yourself if you want it.

Memory and time. Only aligned (or masked) positions are gathered and softmaxed, never the whole
(batch, seq, vocab) tensor, `CHUNK_ROWS` positions at a time. Nor is anything fully sorted or padded:
past the smaller vocabulary's size m the padded side is all zeros, so the longer side's tail adds
exactly its remaining mass, and ULD = L1 over the top m ranks + |rest_student - rest_teacher| (one
rest being 0). `topk(m)` finds those ranks: for 30 positions of SmolLM2 (49,152) against a
300-token student it takes ~12 ms on one CPU thread where a full sort takes ~150 ms, and against a Qwen teacher (152,064) only
49,152 ranks of the teacher are kept.

Cached teacher. `uld_loss_topk` takes the teacher as its top-k log-probabilities per position,
written once to disk by any runtime that reports logprobs. ULD needs only the values, never the token
ids. The rule chosen is the formula above with k in place of m: compare the top k ranks of both
sides and add one bucket holding each side's remaining mass, |rest_student - rest_teacher|. By the
triangle inequality this is a lower bound of the full ULD, tighter than dropping the remainder
(which is the other common choice: mass past the top k ignored on both sides), and it equals the
full ULD whenever at most one side has mass beyond the k ranks (k at least the student's
vocabulary, or a cache that holds the teacher's whole distribution).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum"]

DEFAULT_ULD_WEIGHT = 1.5  # lambda in CE + lambda * ULD: the ULD authors' default (`distil_factor`, llm-recipes)
CHUNK_ROWS = 256  # positions per pass: the teacher's float32 rows for 256 x a 152k vocabulary are ~0.16 GB


# --- Building blocks -----------------------------------------------------------------------------


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f'reduction must be "mean" or "sum", not {reduction!r}')


def _check_temperature(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number above 0, not {value!r}")


def _check_pair(what: str, logits: Tensor, mask: Tensor) -> None:
    """Logits (batch, seq, vocab) with a bool mask (batch, seq) of the positions that count."""
    if logits.dim() != 3:
        raise ValueError(f"{what} logits must be (batch, seq, vocab), got shape {tuple(logits.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{what} mask must be bool (e.g. labels != -100), got {mask.dtype}")
    if tuple(mask.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"{what} mask has shape {tuple(mask.shape)}, its logits (batch, seq) are {tuple(logits.shape[:2])}"
        )


def _chunks(count: int) -> Iterator[slice]:
    for start in range(0, count, CHUNK_ROWS):
        yield slice(start, start + CHUNK_ROWS)


def _no_positions(student_logits: Tensor) -> Tensor:
    """An empty per-position loss that is still a function of the student's logits.

    Summing it gives an exact 0 with a grad_fn (a zero gradient), so a batch with nothing to
    distil can still go through `backward()` like any other; `logits.sum() * 0` would be NaN for a
    model that puts -inf logits on unused ids.
    """
    none = torch.zeros(0, dtype=torch.long, device=student_logits.device)
    return student_logits[none, none].float().sum(-1)


def _reduce(per_position: Tensor, reduction: Reduction) -> Tensor:
    total = per_position.sum()
    if reduction == "sum":
        return total
    return total / max(per_position.numel(), 1)


def _top_and_rest(probs: Tensor, ranks: int, whole: bool = True) -> tuple[Tensor, Tensor]:
    """Per row, the `ranks` largest probabilities in descending order and the mass left past them.

    `whole` says `probs` is a full distribution: when it has no more entries than `ranks`, nothing is
    left, an exact 0 rather than 1 - sum's rounding. A cached top-k is not whole: its rest is the
    mass the cache dropped.
    """
    top = probs.topk(min(ranks, probs.shape[-1]), dim=-1).values
    if whole and top.shape[-1] == probs.shape[-1]:
        return top, torch.zeros_like(top[:, 0])
    return top, (1 - top.sum(-1)).clamp_min(0)


def _ranked_l1(student: tuple[Tensor, Tensor], teacher: tuple[Tensor, Tensor]) -> Tensor:
    """Per row, L1 between two (top ranks, rest) pairs: the ranks compared with the shorter list
    zero-padded (past the common length |x - 0| summed is the longer list's tail sum, so the padding
    is never built), plus |rest_student - rest_teacher| as one more bucket."""
    (student_top, student_rest), (teacher_top, teacher_rest) = student, teacher
    common = min(student_top.shape[-1], teacher_top.shape[-1])
    head = (student_top[:, :common] - teacher_top[:, :common]).abs().sum(-1)
    tails = student_top[:, common:].sum(-1) + teacher_top[:, common:].sum(-1)
    return head + tails + (student_rest - teacher_rest).abs()


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per row, KL(p || q) = sum p (log p - log q), from log-probabilities (finite logits assumed)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def align_answer_positions(student_mask: Tensor, teacher_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pair the k-th answer position of the student with the k-th of the teacher, row by row.

    Each row keeps min(student count, teacher count) pairs; a row where either side has no answer
    position contributes none. Returns (row, student position, teacher position), three equal-length
    1-D long tensors in row-major order.
    """
    if student_mask.dim() != 2 or teacher_mask.dim() != 2 or student_mask.shape[0] != teacher_mask.shape[0]:
        raise ValueError(
            f"masks must be (batch, seq) with one batch size, got {tuple(student_mask.shape)} and "
            f"{tuple(teacher_mask.shape)}"
        )
    kept = torch.minimum(student_mask.sum(1), teacher_mask.sum(1)).unsqueeze(1)
    # cumsum numbers each row's answer positions 1, 2, ...: keep the first `kept` of them on each side.
    student_rows, student_pos = (student_mask & (student_mask.cumsum(1) <= kept)).nonzero(as_tuple=True)
    _, teacher_pos = (teacher_mask & (teacher_mask.cumsum(1) <= kept)).nonzero(as_tuple=True)
    return student_rows, student_pos, teacher_pos


# --- Universal Logit Distillation ----------------------------------------------------------------


def uld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_mask: Tensor,
    teacher_mask: Tensor,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """ULD between a student and a teacher whose vocabularies may differ in size and order.

    Arguments:
        student_logits: (batch, seq_s, V_s).
        teacher_logits: (batch, seq_t, V_t); detached (no gradient ever reaches the teacher).
        student_mask, teacher_mask: bool (batch, seq_s) and (batch, seq_t), True at the positions
            whose logits predict an answer token; paired in order, cut to the shorter count per row.
        student_temperature, teacher_temperature: each side's softmax temperature.
        reduction: "mean" over all aligned positions of the batch, or "sum".

    Returns a scalar float32 tensor: 0 (still connected to `student_logits`) when nothing aligns.
    """
    _check_pair("student", student_logits, student_mask)
    _check_pair("teacher", teacher_logits, teacher_mask)
    _check_temperature("student_temperature", student_temperature)
    _check_temperature("teacher_temperature", teacher_temperature)
    _check_reduction(reduction)
    rows, student_pos, teacher_pos = align_answer_positions(student_mask, teacher_mask)
    ranks = min(student_logits.shape[-1], teacher_logits.shape[-1])  # past these, one side is zero padding
    teacher_logits = teacher_logits.detach()
    parts = []
    for chunk in _chunks(rows.numel()):
        student = F.softmax(student_logits[rows[chunk], student_pos[chunk]].float() / student_temperature, -1)
        with torch.no_grad():
            teacher = F.softmax(teacher_logits[rows[chunk], teacher_pos[chunk]].float() / teacher_temperature, -1)
            teacher_ranked = _top_and_rest(teacher, ranks)
        parts.append(_ranked_l1(_top_and_rest(student, ranks), teacher_ranked))
    return _reduce(torch.cat(parts) if parts else _no_positions(student_logits), reduction)


def uld_loss_topk(
    student_logits: Tensor,
    student_mask: Tensor,
    teacher_topk_logprobs: Tensor,
    teacher_mask: Tensor,
    k: int | None = None,
    student_temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """ULD against a cached teacher: its top log-probabilities per position, not its logits.

    Arguments:
        student_logits: (batch, seq_s, V_s).
        student_mask: bool (batch, seq_s), the student's answer positions.
        teacher_topk_logprobs: (batch, seq_t, width), the teacher's largest log-probabilities of its
            full distribution, in any order (padding entries may be -inf). Ids are not needed.
        teacher_mask: bool (batch, seq_t), the teacher's answer positions.
        k: ranks compared on each side; None (or more than the cache holds) uses the whole cache.
        student_temperature: the student's softmax temperature. The teacher has none: its cache
            holds probabilities at the temperature it was run with (renormalising a top-k at another
            temperature would need the mass it dropped), so write the cache at the one you want.
        reduction: as in `uld_loss`.

    Per aligned position: the top k sorted probabilities of each side (the student's from its full
    softmax), L1 between them, plus |rest_student - rest_teacher| where rest = 1 - (top-k mass).
    That is a lower bound of `uld_loss` and equal to it when only one side has mass past rank k.
    """
    _check_pair("student", student_logits, student_mask)
    _check_pair("teacher", teacher_topk_logprobs, teacher_mask)
    _check_temperature("student_temperature", student_temperature)
    _check_reduction(reduction)
    width = teacher_topk_logprobs.shape[-1]
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    ranks = width if k is None else min(k, width)
    rows, student_pos, teacher_pos = align_answer_positions(student_mask, teacher_mask)
    teacher_topk_logprobs = teacher_topk_logprobs.detach()
    parts = []
    for chunk in _chunks(rows.numel()):
        student = F.softmax(student_logits[rows[chunk], student_pos[chunk]].float() / student_temperature, -1)
        with torch.no_grad():
            cached = teacher_topk_logprobs[rows[chunk], teacher_pos[chunk]].float().exp()
            teacher_ranked = _top_and_rest(cached, ranks, whole=False)
        parts.append(_ranked_l1(_top_and_rest(student, ranks), teacher_ranked))
    return _reduce(torch.cat(parts) if parts else _no_positions(student_logits), reduction)


def total_loss(ce: Tensor, uld: Tensor, lam: float = DEFAULT_ULD_WEIGHT) -> Tensor:
    """The distillation objective: CE on the student's own labels + lam * ULD (lam 1.5, see above)."""
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number at least 0, not {lam!r}")
    return ce + lam * uld


# --- Same tokenizer: forward KL and JSD ------------------------------------------------------------


def _shared_vocab_rows(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float, reduction: str
) -> tuple[Tensor, Tensor, int]:
    """Checks for the same-tokenizer losses; returns the masked (row, position) and the shared width.

    The shared vocabulary is the ids below the smaller output size: models of one family often pad
    their output layer to different sizes past the real tokens (Qwen2.5 0.5B 151,936, 32B 152,064).
    """
    _check_pair("student", student_logits, mask)
    _check_pair("teacher", teacher_logits, mask)
    _check_temperature("temperature", temperature)
    _check_reduction(reduction)
    rows, positions = mask.nonzero(as_tuple=True)
    return rows, positions, min(student_logits.shape[-1], teacher_logits.shape[-1])


def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """KL(teacher || student) at `temperature` on a shared vocabulary, per masked position.

    Both logits are (batch, seq, V) over the same tokens and positions; `mask` is bool (batch, seq).
    "mean" averages over masked positions; the teacher is detached.
    """
    rows, positions, vocab = _shared_vocab_rows(student_logits, teacher_logits, mask, temperature, reduction)
    teacher_logits = teacher_logits.detach()
    parts = []
    for chunk in _chunks(rows.numel()):
        student = F.log_softmax(student_logits[rows[chunk], positions[chunk], :vocab].float() / temperature, -1)
        with torch.no_grad():
            teacher = F.log_softmax(teacher_logits[rows[chunk], positions[chunk], :vocab].float() / temperature, -1)
        parts.append(_kl_rows(teacher, student))
    return _reduce(torch.cat(parts) if parts else _no_positions(student_logits), reduction)


def jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Jensen-Shannon divergence (natural log, at most ln 2) on a shared vocabulary, per masked position.

    JSD = (KL(p_s || m) + KL(p_t || m)) / 2 with m = (p_s + p_t) / 2: symmetric and bounded, so a
    teacher mode the student has not found yet does not blow it up as forward KL can. Arguments as
    in `forward_kl`.
    """
    rows, positions, vocab = _shared_vocab_rows(student_logits, teacher_logits, mask, temperature, reduction)
    teacher_logits = teacher_logits.detach()
    parts = []
    for chunk in _chunks(rows.numel()):
        student = F.log_softmax(student_logits[rows[chunk], positions[chunk], :vocab].float() / temperature, -1)
        with torch.no_grad():
            teacher = F.log_softmax(teacher_logits[rows[chunk], positions[chunk], :vocab].float() / temperature, -1)
        middle = torch.logaddexp(student, teacher) - math.log(2)
        parts.append((_kl_rows(student, middle) + _kl_rows(teacher, middle)) / 2)
    return _reduce(torch.cat(parts) if parts else _no_positions(student_logits), reduction)
