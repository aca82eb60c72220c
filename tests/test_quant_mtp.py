"""MTP heads through katpilot quant export: a companion GGUF beside a main file stock llama.cpp loads,
reloading bit-exact, reported by katpilot models info."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="building a checkpoint with MTP heads needs the train extra")

from quant_helpers import add_mtp_heads, logits_llama, tiny_checkpoint
from typer.testing import CliRunner

from katpilot.cli import app
from katpilot.errors import ModelFileError
from katpilot.gguf_file import read_gguf
from quant.export import export_checkpoint
from quant.mtp import load_mtp_heads


def test_mtp_heads_go_to_a_companion_that_reloads_bit_exact(smol_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = tiny_checkpoint("llama", smol_checkpoint, tmp_path / "ckpt", bf16=True)
    export_checkpoint(ckpt, tmp_path / "plain.gguf", "f16")
    added = add_mtp_heads(ckpt, depth=1)
    report = export_checkpoint(ckpt, tmp_path / "model.gguf", "f16")
    companion = tmp_path / "model.mtp.gguf"
    assert (report.companion, report.mtp_heads) == (companion, 1)

    # The main file is the model without its heads: stock llama.cpp loads it, logits unchanged.
    ids = [[1, 504, 3287, 17, 12, 7, 99, 2003, 45]]
    main, plain = logits_llama(tmp_path / "model.gguf", ids), logits_llama(tmp_path / "plain.gguf", ids)
    assert np.array_equal(main[0], plain[0])

    # The companion holds llama.cpp's nextn layout and gives every head tensor back, bit for bit.
    import gguf

    reader = gguf.GGUFReader(companion)
    assert reader.get_field("llama.nextn_predict_layers").contents() == 1  # type: ignore[union-attr]
    assert reader.get_field("llama.block_count").contents() == 3  # type: ignore[union-attr]
    names = {t.name for t in reader.tensors}
    assert {
        "blk.2.nextn.eh_proj.weight",
        "blk.2.nextn.enorm.weight",
        "blk.2.nextn.hnorm.weight",
        "blk.2.attn_q.weight",
    } <= names
    assert {t.tensor_type.name for t in reader.tensors} == {"BF16"}
    heads = load_mtp_heads(companion)
    assert set(heads) == set(added)
    for name, value in added.items():
        assert np.array_equal(heads[name], value.float().numpy()), name

    summary = read_gguf(tmp_path / "model.gguf")
    assert summary.mtp_heads == 1 and summary.companion_status() == "model.mtp.gguf (present)"
    shown = CliRunner().invoke(app, ["models", "info", str(tmp_path / "model.gguf")])
    assert shown.exit_code == 0, shown.output
    assert "mtp_heads        1" in shown.output and "mtp_companion    model.mtp.gguf (present)" in shown.output
    with pytest.raises(ModelFileError, match="is the MTP heads companion of a model"):
        read_gguf(companion)  # never listed or loaded as a model of its own
    companion.unlink()
    assert "missing" in str(read_gguf(tmp_path / "model.gguf").companion_status())
