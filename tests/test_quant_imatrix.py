"""Importance matrices: measured on the real embedded model through transformers, handed to llama.cpp's
quantizer (which must say it used them), checked before llama.cpp sees them, and calibrated only on
text the repository index lets out (secrets withheld).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra")

import gguf

from quant.errors import QuantError
from quant.imatrix import (
    Imatrix,
    calibration_texts,
    compute_imatrix,
    load_imatrix,
    save_imatrix,
    weight_columns,
)
from quant.quantize import quantize

QUANT_SOURCES = Path(__file__).resolve().parents[1] / "quant"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
PASSWORD = "hunter2hunter2"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


@pytest.fixture(scope="module")
def matrix(smol_checkpoint: Path) -> Imatrix:
    """384 calibration tokens (two chunks) of katpilot's own quant/ sources."""
    texts = calibration_texts(QUANT_SOURCES, 4000)
    return compute_imatrix(smol_checkpoint, texts, max_tokens=384, chunk=192)


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_the_matrix_covers_every_weight_matrix_with_one_positive_value_per_column(
    matrix: Imatrix, model_path: Path
) -> None:
    # SmolLM2 ties its embeddings: llama.cpp multiplies the output by token_embd, so that is the name.
    assert {name: values.size for name, values in matrix.items()} == weight_columns(model_path)
    assert weight_columns(model_path)["blk.0.ffn_down.weight"] == 1536  # ggml's ne[0]: the input width
    assert len(matrix) == 30 * 7 + 1 and matrix["blk.0.ffn_down.weight"].size == 1536
    for values in matrix.values():
        assert values.dtype == np.float32 and np.all(np.isfinite(values)) and np.all(values > 0)
    assert (matrix.tokens, matrix.chunks, matrix.chunk_size) == (384, 2, 192)
    # q, k and v (gate and up) read the same input: the export's q/k row permutation leaves columns alone.
    for block in (0, 29):
        q = matrix[f"blk.{block}.attn_q.weight"]
        assert np.array_equal(q, matrix[f"blk.{block}.attn_k.weight"])
        assert np.array_equal(q, matrix[f"blk.{block}.attn_v.weight"])
        assert np.array_equal(matrix[f"blk.{block}.ffn_gate.weight"], matrix[f"blk.{block}.ffn_up.weight"])


def test_llama_cpp_takes_the_matrix_and_it_changes_the_result(
    matrix: Imatrix, model_path: Path, tmp_path: Path
) -> None:
    plain = quantize(model_path, tmp_path / "plain.gguf", "q4_k_m")
    weighted = quantize(model_path, tmp_path / "weighted.gguf", "q4_k_m", imatrix=matrix)
    assert plain.imatrix_entries == 0
    # From llama.cpp's own log: it read every entry, and found one for every tensor it quantized.
    assert weighted.imatrix_entries == len(matrix) and weighted.imatrix_missing == []
    assert weighted.output_bytes == plain.output_bytes and sha1(weighted.output) != sha1(plain.output)
    import llama_cpp

    llm = llama_cpp.Llama(str(weighted.output), n_ctx=128, n_threads=2, verbose=False)
    try:
        assert llm.create_completion("def add(a, b):", max_tokens=4, temperature=0.0)["choices"][0]["text"].strip()
    finally:
        llm.close()
    # Only block 0's entries: llama.cpp quantizes the rest without, and the report names them.
    partial = quantize(
        model_path, tmp_path / "partial.gguf", "q4_0", imatrix={k: v for k, v in matrix.items() if ".0." in k}
    )
    assert partial.imatrix_entries == 7 and "blk.1.attn_q.weight" in partial.imatrix_missing
    assert any("had no importance-matrix entry" in n for n in partial.notices)
    # q8_0 rounds to nearest: the matrix changes nothing, and the report says so.
    q8 = quantize(model_path, tmp_path / "q8.gguf", "q8_0", imatrix=matrix)
    assert any("q8_0 does not use an importance matrix" in n for n in q8.notices)


def test_a_bad_matrix_is_one_clear_error_and_leaves_nothing(matrix: Imatrix, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    short = dict(matrix) | {"blk.3.ffn_down.weight": np.ones(576, dtype=np.float32)}
    with pytest.raises(QuantError, match=r"'blk\.3\.ffn_down\.weight' has 576 values; the tensor has 1536 columns"):
        quantize(model_path, out, "q4_k_m", imatrix=short)
    for name in ("blk.30.attn_q.weight", "output_norm.weight", "model.layers.0.mlp.up_proj"):
        with pytest.raises(QuantError, match=f"entry '{name}' names no weight matrix of {model_path.name}"):
            quantize(model_path, out, "q4_k_m", imatrix=dict(matrix) | {name: np.ones(576, dtype=np.float32)})
    broken = np.ones(576, dtype=np.float32)
    broken[5] = np.nan
    with pytest.raises(QuantError, match="negative or non-finite"):
        quantize(model_path, out, "q4_k_m", imatrix={"blk.0.attn_q.weight": broken})
    with pytest.raises(QuantError, match="the importance matrix is empty"):
        quantize(model_path, out, "q4_k_m", imatrix={})
    assert list(tmp_path.iterdir()) == []


def test_the_matrix_file_is_llama_cpps_imatrix_gguf(matrix: Imatrix, model_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "repo.imatrix.gguf"
    save_imatrix(path, matrix)
    reader = gguf.GGUFReader(path)
    assert reader.get_field("general.type").contents() == "imatrix"  # type: ignore[union-attr]
    sums = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight.in_sum2")
    assert [int(n) for n in sums.shape] == [1536, 1]  # ggml order: columns, then matrices
    back = load_imatrix(path)
    assert back.keys() == matrix.keys() and (back.tokens, back.chunks, back.chunk_size) == (384, 2, 192)
    for name, values in matrix.items():
        np.testing.assert_allclose(back[name], values, rtol=1e-6)
    with pytest.raises(QuantError, match="is not an importance matrix"):
        load_imatrix(model_path)
    (tmp_path / "notes.txt").write_text("not a gguf\n")
    with pytest.raises(QuantError, match="is not a GGUF file"):
        load_imatrix(tmp_path / "notes.txt")
    with pytest.raises(QuantError, match="does not exist"):
        load_imatrix(tmp_path / "missing.gguf")
    for count, says in ((np.nan, "not finite numbers"), (np.inf, "not finite numbers")):
        odd = tmp_path / "odd.imatrix.gguf"  # written by hand: counts no tool would write
        writer = gguf.GGUFWriter(odd, "llama")
        writer.add_type(gguf.GGUFType.IMATRIX)
        writer.add_tensor("blk.0.attn_q.weight.in_sum2", np.ones((1, 576), dtype=np.float32))
        writer.add_tensor("blk.0.attn_q.weight.counts", np.array([[count]], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with pytest.raises(QuantError, match=says):
            load_imatrix(odd)


def test_calibration_text_never_holds_a_withheld_secret(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / ".env").write_text(f"AWS_SECRET_ACCESS_KEY={AWS_KEY}\nDEBUG=1\n")
    (repo / "settings.py").write_text(f'REGION = "eu-west-1"\naws_key = "{AWS_KEY}"\npassword = "{PASSWORD}"\n')
    (repo / "app" / "main.py").write_text("def main() -> int:\n    return 42\n" * 200)
    (repo / "web.js").write_text(f'const token = "{GITHUB_TOKEN}";\nconsole.log("Prints 42.");\n')
    texts = calibration_texts(repo, 2000)
    joined = "\n".join(texts)
    assert AWS_KEY not in joined and PASSWORD not in joined and GITHUB_TOKEN not in joined and "DEBUG=1" not in joined
    assert 'REGION = "eu-west-1"' in joined and "Prints 42." in joined and "def main() -> int:" in joined
    # Every file gets its share: the short ones whole, the long one cut to what is left.
    assert len(texts) == 3 and sum(map(len, texts)) <= 2000


def test_empty_text_and_a_missing_train_extra_are_one_line(
    smol_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(QuantError, match="the calibration text is empty"):
        compute_imatrix(smol_checkpoint, [], max_tokens=64)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails as if it were not installed
    with pytest.raises(QuantError, match="needs the train extra") as caught:
        compute_imatrix(smol_checkpoint, ["def f(): pass"], max_tokens=64)
    assert caught.value.fix == "pip install 'katpilot[train]'"
