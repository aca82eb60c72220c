"""The AutoThink loop through quant: a checkpoint that writes the format (the cold-start SFT stage's
output) exports with its tags as control tokens, and katpilot ask on the GGUF shows the model's own
judge and mode through the gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="fine-tuning needs the train extra")

from quant_helpers import autothink_checkpoint

from katpilot.gate import KAT_TAGS
from katpilot.gguf_file import read_gguf
from katpilot.profiles import detect_profile
from quant.export import export_checkpoint

EXAMPLES = [
    ("What is 2+3?", "<judge>\nOne small sum: no reasoning needed.\n</judge>\n<think_off>\n<answer>\n5\n</answer>"),
    (
        "A train leaves at 3pm and travels 2 hours, then waits 1 hour. When does it stop waiting?",
        "<judge>\nSeveral steps of time arithmetic: worth thinking.\n</judge>\n<think_on>\n<think>\n3pm plus 2 hours is 5pm; plus 1 hour is 6pm.\n</think>\n<answer>\n6pm\n</answer>",
    ),
]


def test_the_autothink_tags_export_as_control_tokens_and_pick_the_kat_profile(
    smol_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = autothink_checkpoint(smol_checkpoint, tmp_path / "tags", EXAMPLES, steps=0)  # tags added, not trained
    out = tmp_path / "tags.gguf"
    report = export_checkpoint(ckpt, out, "f16")
    assert set(report.control_tokens) >= KAT_TAGS
    summary = read_gguf(out)
    assert summary.tags_in_vocab == KAT_TAGS
    assert detect_profile(summary.chat_template, summary.tags_in_vocab).name == "kat"
    import llama_cpp
    from tokenizers import Tokenizer

    response = EXAMPLES[1][1]
    expected = Tokenizer.from_file(str(ckpt / "tokenizer.json")).encode(response).ids
    llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    try:
        assert llm.tokenize(response.encode(), add_bos=False, special=True) == expected
        judge = llm.tokenize(b"<judge>", add_bos=False, special=True)
        assert len(judge) == 1 and llm.detokenize(judge, special=True) == b"<judge>"
        assert llm.detokenize(judge) == b""  # a CONTROL token: hidden unless asked for, as llama.cpp does
    finally:
        llm.close()


@pytest.mark.slow  # fine-tunes 135M parameters on CPU: minutes (pytest -m slow tests/test_quant_autothink.py)
def test_an_autothink_checkpoint_exports_and_decides_for_itself(smol_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = autothink_checkpoint(smol_checkpoint, tmp_path / "sft", EXAMPLES)
    out = tmp_path / "autothink.gguf"
    export_checkpoint(ckpt, out, "f16")
    for (question, expected), mode in zip(EXAMPLES, ["off", "on"], strict=True):
        done = subprocess.run(
            [sys.executable, "-m", "katpilot", "ask", question, "--model", str(out), "--json", "--temperature", "0"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["mode"] == mode and answer["decided_by"] == "model" and answer["profile"] == "kat"
        assert answer["judge"].strip() == expected.split("<judge>\n")[1].split("\n</judge>")[0]
        assert answer["answer"].strip() == expected.split("<answer>\n")[1].split("\n</answer>")[0]
