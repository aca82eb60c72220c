"""`katpilot quant quantize`: llama.cpp's quantizer on the embedded model, a clear line for bad input,
and never a file at the output path unless it is complete.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from katpilot.engine.base import SamplingParams
from katpilot.engine.local import LocalEngine
from katpilot.errors import KatpilotError, ModelFileError
from katpilot.gguf_file import read_gguf
from quant.quantize import QuantError, quantize

KATPILOT = [sys.executable, "-m", "katpilot"]


def test_q4_k_m_of_the_embedded_model_loads_answers_and_names_its_fallbacks(model_path: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    report = quantize(model_path, tmp_path / "q4km.gguf", "Q4_K_M", progress=lambda d, t: seen.append((d, t)))
    assert report.output == tmp_path / "q4km.gguf" and read_gguf(report.output).file_type == "Q4_K_M"
    assert [p.name for p in tmp_path.iterdir()] == ["q4km.gguf"]  # no partial file left beside it
    assert seen and seen[-1][0] == seen[-1][1] == read_gguf(model_path).tensor_count
    # SmolLM2's rows are 576 wide: K-quants need multiples of 256, so llama.cpp falls back there.
    assert "blk.0.attn_q.weight" in report.fallbacks
    assert any("not divisible by 256" in n for n in report.notices)
    assert any("already Q4_1" in n for n in report.notices)
    engine = LocalEngine(report.output, n_ctx=256, n_threads=2)
    try:
        text = "".join(engine.stream("The capital of France is", SamplingParams(temperature=0.0, max_tokens=4)))
    finally:
        engine.close()
    assert text.strip()


def test_bad_input_is_one_clear_error_and_leaves_nothing(model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantError, match="unknown quantization type 'q9'"):
        quantize(model_path, tmp_path / "out.gguf", "q9")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(model_path.read_bytes()[:100_000])
    with pytest.raises(ModelFileError, match="truncated"):
        quantize(truncated, tmp_path / "out.gguf", "q8_0")
    with pytest.raises(QuantError, match="is not a directory"):
        quantize(model_path, tmp_path / "missing" / "out.gguf", "q8_0")
    with pytest.raises(KatpilotError, match="is the input file"):
        quantize(model_path, model_path, "q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf"]


def test_an_output_that_is_not_a_gguf_is_never_replaced(model_path: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(QuantError, match="exists and is not a GGUF file"):
        quantize(model_path, notes, "q8_0")
    assert notes.read_text() == "my notes\n"
    with pytest.raises(QuantError, match="names no file"):
        quantize(model_path, Path(""), "q8_0")
    with pytest.raises(QuantError, match="is a directory"):
        quantize(model_path, tmp_path, "q8_0")
    earlier = tmp_path / "earlier.gguf"  # an earlier output is a GGUF: replaced whole
    earlier.write_bytes(b"GGUF" + bytes(12))
    quantize(model_path, earlier, "q8_0")
    assert read_gguf(earlier).file_type == "Q8_0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier.gguf", "notes.txt"]


def test_the_command_reports_in_one_line_each(model_path: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [*KATPILOT, "quant", "quantize", str(model_path), str(tmp_path / "q8.gguf"), "q8_0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {tmp_path / 'q8.gguf'} (q8_0, ")
    assert "already Q4_1" in done.stderr and "llama_model_quantize" not in done.stderr  # llama.cpp's log kept out
    bad = subprocess.run(
        [*KATPILOT, "quant", "quantize", str(tmp_path / "nope.gguf"), str(tmp_path / "o.gguf"), "q8_0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope.gguf" in bad.stderr
