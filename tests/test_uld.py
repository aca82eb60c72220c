"""trainer.losses.uld: ULD against values worked out by hand, its invariances, temperatures, masks and
alignment, gradients, the cached top-k teacher, forward KL and JSD against torch references, and a
real cross-tokenizer case (the embedded SmolLM2 tokenizer against a small BPE trained here)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra")
import torch.nn.functional as F  # noqa: E402

from trainer.losses.uld import (  # noqa: E402
    DEFAULT_ULD_WEIGHT,
    align_answer_positions,
    forward_kl,
    jsd,
    total_loss,
    uld_loss,
    uld_loss_topk,
)

torch.set_num_threads(1)


# --- References: plain Python, and a direct torch version that pads for real ----------------------


def _softmax(logits: list[float], temperature: float = 1.0) -> list[float]:
    top = max(logits)
    exps = [math.exp((x - top) / temperature) for x in logits]
    return [e / sum(exps) for e in exps]


def _uld_by_hand(student: list[float], teacher: list[float], ts: float = 1.0, tt: float = 1.0) -> float:
    """One position: sort both probability vectors, zero-pad the shorter, sum |differences|."""
    s = sorted(_softmax(student, ts), reverse=True)
    t = sorted(_softmax(teacher, tt), reverse=True)
    size = max(len(s), len(t))
    s += [0.0] * (size - len(s))
    t += [0.0] * (size - len(t))
    return sum(abs(a - b) for a, b in zip(s, t, strict=True))


def _uld_reference(student_rows: Any, teacher_rows: Any, ts: float = 1.0, tt: float = 1.0) -> Any:
    """Per-row ULD of already-aligned (n, V) rows, with the zero padding built."""
    s = F.softmax(student_rows.double() / ts, -1).sort(-1, descending=True).values
    t = F.softmax(teacher_rows.double() / tt, -1).sort(-1, descending=True).values
    size = max(s.shape[-1], t.shape[-1])
    s = F.pad(s, (0, size - s.shape[-1]))
    t = F.pad(t, (0, size - t.shape[-1]))
    return (s - t).abs().sum(-1)


def _logits(rows: list[list[float]]) -> Any:
    """Positions of one sequence: (1, seq, V)."""
    return torch.tensor([rows], dtype=torch.float32)


def _all(batch: int, seq: int) -> Any:
    return torch.ones(batch, seq, dtype=torch.bool)


# A student over 3 tokens and a teacher over 5 whose probabilities are simple fractions.
STUDENT_3 = [math.log(1), math.log(2), math.log(1)]  # 1/4, 1/2, 1/4
TEACHER_5 = [math.log(1), math.log(1), math.log(4), math.log(1), math.log(1)]  # 1/8 x4, 1/2


# --- Values by hand ------------------------------------------------------------------------------


def test_simple_fractions_by_hand() -> None:
    # sorted: student [1/2, 1/4, 1/4, 0, 0], teacher [1/2, 1/8, 1/8, 1/8, 1/8]: 0 + 4 * 1/8
    loss = uld_loss(_logits([STUDENT_3]), _logits([TEACHER_5]), _all(1, 1), _all(1, 1))
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    assert _uld_by_hand(STUDENT_3, TEACHER_5) == pytest.approx(0.5)


def test_explicit_logits_by_hand_and_mean_over_positions() -> None:
    student = [[0.3, -1.2, 2.0], [1.0, 1.0, -0.5]]
    teacher = [[0.5, 0.1, -2.0, 1.7, 0.0], [3.0, -1.0, 0.2, 0.2, -0.7]]
    first, second = (_uld_by_hand(s, t) for s, t in zip(student, teacher, strict=True))
    mean = uld_loss(_logits(student), _logits(teacher), _all(1, 2), _all(1, 2))
    total = uld_loss(_logits(student), _logits(teacher), _all(1, 2), _all(1, 2), reduction="sum")
    assert mean.item() == pytest.approx((first + second) / 2, abs=1e-6)
    assert total.item() == pytest.approx(first + second, abs=1e-6)
    assert mean.dtype == torch.float32 and mean.dim() == 0


def test_zero_padding_runs_either_way() -> None:
    """The student's vocabulary may be the longer one too."""
    loss = uld_loss(_logits([TEACHER_5]), _logits([STUDENT_3]), _all(1, 1), _all(1, 1))
    assert loss.item() == pytest.approx(0.5, abs=1e-6)


# --- Invariances ---------------------------------------------------------------------------------


def test_invariant_to_permuting_either_vocabulary() -> None:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 4, 7, generator=generator)
    teacher = torch.randn(2, 6, 11, generator=generator)
    student_mask, teacher_mask = _all(2, 4), _all(2, 6)
    base = uld_loss(student, teacher, student_mask, teacher_mask)
    for _ in range(3):
        ps, pt = torch.randperm(7, generator=generator), torch.randperm(11, generator=generator)
        assert uld_loss(student[..., ps], teacher, student_mask, teacher_mask).item() == pytest.approx(base.item())
        assert uld_loss(student, teacher[..., pt], student_mask, teacher_mask).item() == pytest.approx(base.item())
        both = uld_loss(student[..., ps], teacher[..., pt], student_mask, teacher_mask)
        assert both.item() == pytest.approx(base.item())


def test_zero_for_identical_distributions_and_up_to_permutation() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 9, generator=generator)
    mask = _all(3, 5)
    assert uld_loss(logits, logits.clone(), mask, mask).item() == 0.0
    shuffled = logits[..., torch.randperm(9, generator=generator)]
    assert uld_loss(logits, shuffled, mask, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_an_extra_vocabulary_entry_with_no_mass_costs_nothing() -> None:
    """Zero padding: a teacher with one more token that never gets probability matches exactly."""
    logits = torch.tensor([[[0.2, 1.5, -0.3]]])
    wider = torch.cat([logits, torch.full((1, 1, 1), -1e9)], dim=-1)
    assert uld_loss(logits, wider, _all(1, 1), _all(1, 1)).item() == pytest.approx(0.0, abs=1e-6)


# --- Temperatures --------------------------------------------------------------------------------


def test_temperatures_by_hand() -> None:
    student, teacher = [0.3, -1.2, 2.0], [0.5, 0.1, -2.0, 1.7, 0.0]
    for ts, tt in [(2.0, 1.0), (1.0, 0.5), (0.7, 3.0)]:
        loss = uld_loss(_logits([student]), _logits([teacher]), _all(1, 1), _all(1, 1), ts, tt)
        assert loss.item() == pytest.approx(_uld_by_hand(student, teacher, ts, tt), abs=1e-6)


def test_temperature_limits() -> None:
    student, teacher = _logits([[0.3, -1.2, 2.0]]), _logits([[0.5, 0.1, -2.0, 1.7, 0.0]])
    mask = _all(1, 1)
    # Very hot: both uniform, so |1/3 - 1/5| * 3 + 1/5 * 2 = 0.8 with nothing to learn from the logits.
    hot = uld_loss(student, teacher, mask, mask, 1e4, 1e4)
    assert hot.item() == pytest.approx(0.8, abs=1e-3)
    # Very cold: both one-hot, and sorted one-hots are equal whichever token each picks.
    cold = uld_loss(student, teacher, mask, mask, 1e-3, 1e-3)
    assert cold.item() == pytest.approx(0.0, abs=1e-6)


def test_each_temperature_applies_to_its_own_side() -> None:
    logits = torch.tensor([[[0.2, 1.5, -0.3, 0.9]]])
    mask = _all(1, 1)
    assert uld_loss(logits, logits, mask, mask, 2.0, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    differ = uld_loss(logits, logits, mask, mask, 2.0, 1.0).item()
    assert differ > 0.05
    # Tempering the student by 2 is tempering its logits by hand.
    assert uld_loss(logits / 2, logits, mask, mask).item() == pytest.approx(differ, abs=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_bad_temperature_is_refused(bad: float) -> None:
    logits, mask = torch.zeros(1, 1, 3), _all(1, 1)
    with pytest.raises(ValueError, match="temperature"):
        uld_loss(logits, logits, mask, mask, student_temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        forward_kl(logits, logits, mask, temperature=bad)


# --- Masks and alignment -------------------------------------------------------------------------


def test_alignment_pairs_the_kth_answer_positions_and_cuts_to_the_shorter() -> None:
    student_mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 0, 1, 0, 0, 0]], dtype=torch.bool)
    teacher_mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    rows, student_pos, teacher_pos = align_answer_positions(student_mask, teacher_mask)
    assert rows.tolist() == [0, 0, 0, 1, 1]
    assert student_pos.tolist() == [2, 3, 4, 0, 2]
    assert teacher_pos.tolist() == [1, 2, 3, 5, 6]


def test_loss_follows_the_alignment() -> None:
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(1, 6, 4, generator=generator)
    teacher = torch.randn(1, 8, 7, generator=generator)
    student_mask = torch.tensor([[0, 0, 1, 1, 1, 0]], dtype=torch.bool)  # 3 answer positions
    teacher_mask = torch.tensor([[0, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)  # 5: cut to 3
    expected = _uld_reference(student[0, 2:5], teacher[0, 1:4])
    assert uld_loss(student, teacher, student_mask, teacher_mask).item() == pytest.approx(expected.mean().item())
    summed = uld_loss(student, teacher, student_mask, teacher_mask, reduction="sum")
    assert summed.item() == pytest.approx(expected.sum().item())
    # What lies outside the masks does not matter.
    noisy_student, noisy_teacher = student.clone(), teacher.clone()
    noisy_student[~student_mask] = 50.0
    noisy_teacher[0, 4:] = -50.0  # masked but past the cut, or unmasked
    again = uld_loss(noisy_student, noisy_teacher, student_mask, teacher_mask)
    assert again.item() == pytest.approx(expected.mean().item())


def test_a_row_with_no_answer_positions_contributes_nothing() -> None:
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(2, 4, 3, generator=generator)
    teacher = torch.randn(2, 5, 5, generator=generator)
    student_mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    teacher_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    only_first = _uld_reference(student[0, 1:3], teacher[0, 0:2])
    assert uld_loss(student, teacher, student_mask, teacher_mask).item() == pytest.approx(only_first.mean().item())


def test_a_batch_with_nothing_aligned_is_a_connected_zero() -> None:
    student = torch.randn(2, 4, 3, requires_grad=True)
    teacher = torch.randn(2, 5, 5)
    student_mask = torch.zeros(2, 4, dtype=torch.bool)
    for reduction in ("mean", "sum"):
        loss = uld_loss(student, teacher, student_mask, _all(2, 5), reduction=reduction)
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
        assert student.grad is not None and torch.count_nonzero(student.grad) == 0
    assert not forward_kl(student, student.detach(), student_mask).isnan()
    assert uld_loss_topk(student, student_mask, teacher, _all(2, 5)).grad_fn is not None


def test_bad_shapes_and_masks_say_what_is_wrong() -> None:
    logits = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="must be bool"):
        uld_loss(logits, logits, torch.ones(2, 3), _all(2, 3))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\)"):
        uld_loss(logits, logits, _all(2, 4), _all(2, 3))
    with pytest.raises(ValueError, match="one batch size"):
        uld_loss(logits, torch.zeros(1, 3, 4), _all(2, 3), _all(1, 3))
    with pytest.raises(ValueError, match=r"\(batch, seq, vocab\)"):
        uld_loss(logits[0], logits, _all(2, 3), _all(2, 3))
    with pytest.raises(ValueError, match="reduction"):
        uld_loss(logits, logits, _all(2, 3), _all(2, 3), reduction="none")  # type: ignore[arg-type]


def test_chunked_passes_give_the_same_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.losses import uld

    generator = torch.Generator().manual_seed(12)
    student = torch.randn(3, 7, 6, generator=generator)
    teacher = torch.randn(3, 9, 10, generator=generator)
    same_vocab = torch.randn(3, 7, 6, generator=generator)
    cache = F.log_softmax(teacher, -1).topk(4, -1).values
    student_mask, teacher_mask = _all(3, 7), _all(3, 9)

    def losses() -> list[float]:
        return [
            uld_loss(student, teacher, student_mask, teacher_mask).item(),
            uld_loss_topk(student, student_mask, cache, teacher_mask).item(),
            forward_kl(student, same_vocab, student_mask).item(),
            jsd(student, same_vocab, student_mask).item(),
        ]

    whole = losses()
    monkeypatch.setattr(uld, "CHUNK_ROWS", 4)  # 21 positions: six passes, the last one short
    assert losses() == pytest.approx(whole, abs=1e-6)


# --- Gradients -----------------------------------------------------------------------------------


def test_gradient_reaches_the_student_only() -> None:
    generator = torch.Generator().manual_seed(4)
    student = torch.randn(2, 4, 6, generator=generator).requires_grad_()
    teacher = torch.randn(2, 5, 9, generator=generator).requires_grad_()
    cached = F.log_softmax(teacher.detach(), -1).topk(4, -1).values.requires_grad_()
    same_vocab_teacher = torch.randn(2, 4, 6, generator=generator).requires_grad_()
    student_mask, teacher_mask = _all(2, 4), _all(2, 5)
    losses = [
        uld_loss(student, teacher, student_mask, teacher_mask),
        uld_loss_topk(student, student_mask, cached, teacher_mask),
        forward_kl(student, same_vocab_teacher, student_mask),
        jsd(student, same_vocab_teacher, student_mask),
    ]
    for loss in losses:
        student.grad = None
        loss.backward()
        assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and cached.grad is None and same_vocab_teacher.grad is None


def test_gradient_matches_the_padded_reference() -> None:
    generator = torch.Generator().manual_seed(5)
    student = torch.randn(1, 3, 4, generator=generator, dtype=torch.float64).requires_grad_()
    teacher = torch.randn(1, 3, 6, generator=generator, dtype=torch.float64)
    uld_loss(student, teacher, _all(1, 3), _all(1, 3)).backward()
    ours = student.grad
    reference = student.detach().clone().requires_grad_()
    _uld_reference(reference[0], teacher[0]).mean().backward()
    assert ours is not None and reference.grad is not None
    assert torch.allclose(ours, reference.grad, atol=1e-6)


# --- Cached top-k teacher ------------------------------------------------------------------------


def test_topk_equals_full_when_k_covers_both_vocabularies() -> None:
    generator = torch.Generator().manual_seed(6)
    for v_s, v_t in [(3, 5), (5, 3), (4, 4)]:
        student = torch.randn(2, 4, v_s, generator=generator)
        teacher = torch.randn(2, 3, v_t, generator=generator)
        cache = F.log_softmax(teacher, -1)[..., torch.randperm(v_t, generator=generator)]  # any order
        student_mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
        teacher_mask = _all(2, 3)
        full = uld_loss(student, teacher, student_mask, teacher_mask)
        for k in (None, max(v_s, v_t), 100):
            topk = uld_loss_topk(student, student_mask, cache, teacher_mask, k)
            assert topk.item() == pytest.approx(full.item(), abs=1e-6)
        temp = uld_loss_topk(student, student_mask, cache, teacher_mask, student_temperature=2.0)
        assert temp.item() == pytest.approx(
            uld_loss(student, teacher, student_mask, teacher_mask, 2.0).item(), abs=1e-6
        )


def test_topk_remainder_bucket_by_hand() -> None:
    # k = 2: student [1/2, 1/4 | rest 1/4], teacher [1/2, 1/8 | rest 3/8]: 0 + 1/8 + |1/4 - 3/8| = 1/4.
    cache = F.log_softmax(_logits([TEACHER_5]), -1)
    loss = uld_loss_topk(_logits([STUDENT_3]), _all(1, 1), cache, _all(1, 1), k=2)
    assert loss.item() == pytest.approx(0.25, abs=1e-6)
    # A cache that only ever held the top 2 gives the same.
    narrow = cache.topk(2, -1).values
    assert uld_loss_topk(_logits([STUDENT_3]), _all(1, 1), narrow, _all(1, 1)).item() == pytest.approx(0.25, abs=1e-6)
    # k = 1: [1/2 | 1/2] against [1/2 | 1/2]: the shape beyond the top token is not seen.
    assert uld_loss_topk(_logits([STUDENT_3]), _all(1, 1), cache, _all(1, 1), k=1).item() == pytest.approx(
        0.0, abs=1e-6
    )
    with pytest.raises(ValueError, match="k must be"):
        uld_loss_topk(_logits([STUDENT_3]), _all(1, 1), cache, _all(1, 1), k=0)


def test_topk_is_a_lower_bound_that_tightens_with_k() -> None:
    generator = torch.Generator().manual_seed(7)
    student = torch.randn(2, 5, 12, generator=generator) * 2
    teacher = torch.randn(2, 5, 20, generator=generator) * 2
    cache = F.log_softmax(teacher, -1)
    mask = _all(2, 5)
    full = uld_loss(student, teacher, mask, mask).item()
    values = [uld_loss_topk(student, mask, cache, mask, k).item() for k in range(1, 21)]
    assert all(v <= full + 1e-6 for v in values)
    assert all(a <= b + 1e-6 for a, b in itertools.pairwise(values))
    assert values[11] == pytest.approx(full, abs=1e-6)  # k = 12 covers the student's vocabulary


# --- Same tokenizer: forward KL and JSD ----------------------------------------------------------


def _masked_rows(logits: Any, mask: Any) -> Any:
    return logits[mask]


def test_forward_kl_against_torch() -> None:
    generator = torch.Generator().manual_seed(8)
    student = torch.randn(2, 5, 10, generator=generator)
    teacher = torch.randn(2, 5, 10, generator=generator)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    for temperature in (1.0, 2.5):
        s = F.log_softmax(_masked_rows(student, mask) / temperature, -1)
        t = F.log_softmax(_masked_rows(teacher, mask) / temperature, -1)
        expected = F.kl_div(s, t, log_target=True, reduction="batchmean")
        assert forward_kl(student, teacher, mask, temperature).item() == pytest.approx(expected.item(), abs=1e-6)
        summed = F.kl_div(s, t, log_target=True, reduction="sum")
        assert forward_kl(student, teacher, mask, temperature, "sum").item() == pytest.approx(summed.item(), abs=1e-5)
    assert forward_kl(student, student.clone(), mask).item() == pytest.approx(0.0, abs=1e-7)


def test_jsd_against_torch() -> None:
    generator = torch.Generator().manual_seed(9)
    student = torch.randn(2, 5, 10, generator=generator) * 3
    teacher = torch.randn(2, 5, 10, generator=generator) * 3
    mask = torch.tensor([[1, 1, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    for temperature in (1.0, 0.5):
        p = F.softmax(_masked_rows(student, mask) / temperature, -1)
        q = F.softmax(_masked_rows(teacher, mask) / temperature, -1)
        m = (p + q) / 2
        expected = (F.kl_div(m.log(), p, reduction="batchmean") + F.kl_div(m.log(), q, reduction="batchmean")) / 2
        assert jsd(student, teacher, mask, temperature).item() == pytest.approx(expected.item(), abs=1e-6)
    assert jsd(student, student.clone(), mask).item() == pytest.approx(0.0, abs=1e-7)
    # Bounded by ln 2, reached for distributions on disjoint tokens.
    apart = torch.tensor([[[30.0, -30.0]]]), torch.tensor([[[-30.0, 30.0]]])
    assert jsd(*apart, _all(1, 1)).item() == pytest.approx(math.log(2), abs=1e-6)


def test_same_tokenizer_losses_use_the_shared_ids_of_padded_vocabularies() -> None:
    """One family, output layers padded to different sizes: only ids below the smaller count."""
    generator = torch.Generator().manual_seed(10)
    student = torch.randn(1, 3, 8, generator=generator)
    teacher = torch.randn(1, 3, 8, generator=generator)
    padded = torch.cat([teacher, torch.randn(1, 3, 4, generator=generator)], dim=-1)
    mask = _all(1, 3)
    assert forward_kl(student, padded, mask).item() == pytest.approx(forward_kl(student, teacher, mask).item())
    assert jsd(student, padded, mask).item() == pytest.approx(jsd(student, teacher, mask).item())


# --- The total ----------------------------------------------------------------------------------


def test_total_loss_default_weight() -> None:
    ce, uld = torch.tensor(2.0), torch.tensor(0.4)
    assert DEFAULT_ULD_WEIGHT == 1.5
    assert total_loss(ce, uld).item() == pytest.approx(2.0 + 1.5 * 0.4)
    assert total_loss(ce, uld, 0.0).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="lam"):
        total_loss(ce, uld, -1.0)


# --- A real cross-tokenizer case -------------------------------------------------------------------

PROMPTS = ["Write a Python function that adds two numbers.\n", "Print the total of a list.\n"]
ANSWERS = ["def add(a, b):\n    return a + b\n", "total = sum(values)\nprint(total)\n"]
SMALL_VOCAB = 300


def _corpus() -> Iterator[str]:
    """A few hundred lines of code-like text for a small BPE, made up here (no download)."""
    rng = random.Random(0)
    names = ["add", "total", "values", "items", "count", "result", "numbers", "data", "value", "index"]
    ops = ["+", "-", "*", "//"]
    for _ in range(400):
        a, b, c = rng.sample(names, 3)
        yield rng.choice(
            [
                f"def {a}_{b}({a}, {b}):\n    return {a} {rng.choice(ops)} {b}\n",
                f"{c} = sum({a})\nprint({c})\n",
                f"for {a} in range(len({b})):\n    {c} += {b}[{a}]\n",
                f"Write a Python function that returns the {a} of {b}.\n",
            ]
        )


@pytest.fixture(scope="module")
def smol_tokenizer() -> Iterator[Any]:
    """The embedded SmolLM2's own tokenizer (49,152 ids), read by llama.cpp from the GGUF without its
    weights (~1 s; transformers rebuilding it from the GGUF takes 15-20 s, with the same ids here)."""
    from llama_cpp import Llama

    from katpilot.models import embedded_model_path

    llm = Llama(str(embedded_model_path()), vocab_only=True, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def small_bpe() -> Any:
    """A byte-level BPE with a 300-token vocabulary trained in memory: a different tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=SMALL_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _batch(encode: Any) -> tuple[Any, Any, list[int], list[int]]:
    """Prompt + answer ids per row (right-padded with 0), the mask of positions predicting an answer
    token (position i predicts token i + 1), each row's prompt length, and its answer length."""
    rows, prompt_lengths, answer_lengths = [], [], []
    for prompt, answer in zip(PROMPTS, ANSWERS, strict=True):
        prompt_ids, answer_ids = encode(prompt), encode(answer)
        rows.append(prompt_ids + answer_ids)
        prompt_lengths.append(len(prompt_ids))
        answer_lengths.append(len(answer_ids))
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, prompt_lengths[i] - 1 : len(row) - 1] = True
    return ids, mask, prompt_lengths, answer_lengths


def test_real_cross_tokenizer_distillation(smol_tokenizer: Any, small_bpe: Any) -> None:
    teacher_vocab, student_vocab = smol_tokenizer.n_vocab(), small_bpe.get_vocab_size()
    assert teacher_vocab == 49152 and student_vocab <= SMALL_VOCAB and student_vocab != teacher_vocab

    teacher_ids, teacher_mask, teacher_prompts, teacher_answers = _batch(
        lambda text: smol_tokenizer.tokenize(text.encode(), add_bos=False, special=False)
    )
    student_ids, student_mask, student_prompts, student_answers = _batch(lambda text: small_bpe.encode(text).ids)
    # Same answer text, two tokenizations of different lengths.
    assert all(s != t for s, t in zip(student_answers, teacher_answers, strict=True))
    assert (
        small_bpe.decode(student_ids[0, student_prompts[0] : student_prompts[0] + student_answers[0]].tolist())
        == ANSWERS[0]
    )

    # Alignment: each row's answer positions from its own prompt end, cut to the shorter answer.
    rows, student_pos, teacher_pos = align_answer_positions(student_mask, teacher_mask)
    for row in range(2):
        kept = min(student_answers[row], teacher_answers[row])
        assert int((rows == row).sum()) == kept
        assert student_pos[rows == row].tolist() == list(
            range(student_prompts[row] - 1, student_prompts[row] - 1 + kept)
        )
        assert teacher_pos[rows == row].tolist() == list(
            range(teacher_prompts[row] - 1, teacher_prompts[row] - 1 + kept)
        )

    # A fixed teacher over SmolLM2's vocabulary, confident in the real next token.
    generator = torch.Generator().manual_seed(11)
    teacher_logits = torch.randn(2, teacher_ids.shape[1], teacher_vocab, generator=generator)
    teacher_logits[:, :-1].scatter_add_(
        -1, teacher_ids[:, 1:, None], torch.full((2, teacher_ids.shape[1] - 1, 1), 12.0)
    )

    # A tiny "linear" student over the small BPE vocabulary: logits = a table indexed by the input token.
    student = torch.nn.Embedding(student_vocab, student_vocab)
    torch.nn.init.normal_(student.weight, generator=generator)
    # Probability-space L1 has small gradients in logit space (dp/dz = p(1 - p)): a large step size.
    optimizer = torch.optim.SGD(student.parameters(), lr=50.0)

    def loss_now() -> Any:
        return uld_loss(student(student_ids), teacher_logits, student_mask, teacher_mask)

    with torch.no_grad():
        student_logits = student(student_ids)
        reference = torch.cat(
            [
                _uld_reference(
                    student_logits[row, student_pos[rows == row]], teacher_logits[row, teacher_pos[rows == row]]
                )
                for row in range(2)
            ]
        ).mean()
        before = loss_now()
        assert before.item() == pytest.approx(reference.item(), abs=1e-5)
        cache = F.log_softmax(teacher_logits, -1).topk(64, -1).values  # what a cached teacher would store
        assert uld_loss_topk(student_logits, student_mask, cache, teacher_mask).item() <= before.item() + 1e-6

    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_now()
        loss.backward()
        optimizer.step()
    after = loss_now().item()
    assert after < 0.7 * before.item(), (before.item(), after)
