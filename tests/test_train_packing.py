"""Padding-free batches: packed rows train exactly as padded batches do, and a model whose attention
would mix packed records is caught before training and padded instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from quant_helpers import tiny_checkpoint  # noqa: E402

from trainer.chat_data import IGNORE, load_chats, tokenize_chat  # noqa: E402
from trainer.config import SFTConfig  # noqa: E402
from trainer.data.command import DataRun, run_data  # noqa: E402
from trainer.losses.answer_ce import answer_only_loss  # noqa: E402
from trainer.model_io import add_autothink_tokens, load_student  # noqa: E402
from trainer.packing import REAL_TOKENS, PackedCollator, pack, packing_holds  # noqa: E402
from trainer.sft import batch_collator  # noqa: E402


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, str]]]:
    from katpilot import config as config_mod

    out = tmp_path_factory.mktemp("data") / "arith"
    run_data(
        config_mod.load_settings().settings, DataRun(out=out, kinds=("arithmetic",), teacher="programmatic", limit=24)
    )
    return load_chats(out)


def _student(arch: str, smol: Path, tmp: Path) -> tuple[Any, Any]:
    model, tokenizer = load_student(tiny_checkpoint(arch, smol, tmp))
    add_autothink_tokens(model, tokenizer)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return model, tokenizer


def _rows(tokenizer: Any, chats: list[list[dict[str, str]]]) -> list[dict[str, list[int]]]:
    rows = [tokenize_chat(tokenizer, chat, SFTConfig().system_prompt, 1024) for chat in chats]
    return [r for r in rows if r is not None]


def test_packing_fills_rows_no_longer_than_the_longest_record_with_every_record_once() -> None:
    lengths = [30, 10, 25, 5, 12, 30, 8, 20]
    features = [{"input_ids": [7] * n, "labels": [IGNORE] * (n - 2) + [7, 7]} for n in lengths]
    rows = pack(features)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 30 for row in rows) and len(rows) == 5  # 140 tokens, 5 rows of 30
    batch = PackedCollator(pad_id=0)(features)
    assert batch["input_ids"].shape == (5, 30) and int(batch[REAL_TOKENS]) == sum(lengths)
    assert int((batch["labels"] != IGNORE).sum()) == 2 * len(lengths)  # every answer token, once
    for row, positions in zip(rows, batch["position_ids"].tolist(), strict=True):
        expected = [p for i in row for p in range(lengths[i])]
        assert positions[: len(expected)] == expected  # each record numbered from 0; padding after


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_packed_rows_give_the_padded_batchs_loss_and_gradient(
    arch: str, records: list, smol_checkpoint: Path, tmp_path: Path
) -> None:
    from transformers import DataCollatorForSeq2Seq

    model, tokenizer = _student(arch, smol_checkpoint, tmp_path)
    model.eval()  # no dropout: both layouts see the same network
    rows = _rows(tokenizer, records[:8])
    padded = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)(rows)
    packed = PackedCollator(tokenizer.pad_token_id)(rows)
    packed.pop(REAL_TOKENS)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()  # the point: less padding to compute

    def loss_and_grads(batch: dict[str, Any]) -> tuple[float, int, list]:
        model.zero_grad()
        loss, count = answer_only_loss(model, batch)
        loss.backward()
        return loss.item(), count, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    theirs, their_count, their_grads = loss_and_grads(padded)
    ours, our_count, our_grads = loss_and_grads(packed)
    assert our_count == their_count and ours == pytest.approx(theirs, rel=1e-4)
    for a, b in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert packing_holds(model, rows)


class IgnoresPositions(torch.nn.Module):
    """A model that drops `position_ids`, as an attention without packed-sequence masks would: the second
    packed record then sees the first (a failure made on purpose)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def get_input_embeddings(self) -> Any:
        return self.model.get_input_embeddings()

    def forward(self, input_ids: Any, position_ids: Any = None, **kwargs: Any) -> Any:
        return self.model(input_ids=input_ids, **kwargs)


def test_a_model_that_would_mix_packed_records_is_padded_and_says_so(
    records: list, smol_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import DataCollatorForSeq2Seq

    model, tokenizer = _student("llama", smol_checkpoint, tmp_path)
    rows = _rows(tokenizer, records[:4])
    capsys.readouterr()  # the libraries' loading bars
    assert isinstance(batch_collator(SFTConfig(), model, tokenizer, rows), PackedCollator)
    assert capsys.readouterr().err == ""
    collator = batch_collator(SFTConfig(), IgnoresPositions(model), tokenizer, rows)
    assert isinstance(collator, DataCollatorForSeq2Seq)
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "does not keep packed records apart" in said[0] and "padding_free" in said[0]
    off = batch_collator(SFTConfig(padding_free=False), model, tokenizer, rows)
    assert isinstance(off, DataCollatorForSeq2Seq) and capsys.readouterr().err == ""
