"""The AutoThink loop through quant: a checkpoint that writes the format (the cold-start SFT stage's
output) exports with its tags as control tokens and its MTP head in the companion, and katpilot ask on
the GGUF shows the model's own judge and mode through the gate."""

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
    ckpt = autothink_checkpoint(smol_checkpoint, tmp_path / "tags")  # tags added, not trained
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


@pytest.mark.slow  # distils and fine-tunes 135M parameters on CPU: minutes (pytest -m slow tests/test_quant_autothink.py)
@pytest.mark.timeout(1800)
def test_a_cold_start_sft_checkpoint_exports_and_decides_for_itself(tmp_path: Path) -> None:
    """The real stages, as `katpilot train run` chains them: distillation gives the MTP head, the
    cold-start SFT stage teaches the format (here until it knows the two examples by heart), and its
    `final/` checkpoint is what quant exports."""
    import numpy as np
    from safetensors.numpy import load_file

    from quant.mtp import load_mtp_heads

    chats = tmp_path / "chats.jsonl"
    lines = [
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        for q, a in EXAMPLES
    ]
    chats.write_text("\n".join(lines * 4) + "\n", encoding="utf-8")
    common = ["--data", str(chats), "--method", "full", "--batch-size", "4"]
    _cli(
        "train",
        "distill",
        "--model",
        "smollm2-135m",
        "--mtp-depth",
        "1",
        "--max-steps",
        "2",
        *common,
        "--out",
        str(tmp_path / "distill"),
    )
    _cli(
        "train",
        "sft",
        "--model",
        str(tmp_path / "distill" / "final"),
        "--max-steps",
        "40",
        "--learning-rate",
        "3e-4",
        *common,
        "--out",
        str(tmp_path / "sft"),
    )
    ckpt = tmp_path / "sft" / "final"
    out = tmp_path / "autothink.gguf"
    _cli("quant", "export", str(ckpt), "--out", str(out), "--type", "f16")

    summary = read_gguf(out)
    assert summary.tags_in_vocab == KAT_TAGS
    assert detect_profile(summary.chat_template, summary.tags_in_vocab).name == "kat"
    heads = load_mtp_heads(out.with_suffix(".mtp.gguf"))
    saved = load_file(str(ckpt / "mtp.safetensors"))
    assert heads.keys() == saved.keys() and heads
    for name, values in saved.items():  # the companion keeps the checkpoint's precision: bit for bit
        assert np.array_equal(heads[name], values.astype(np.float32)), name

    for (question, expected), mode in zip(EXAMPLES, ["off", "on"], strict=True):
        done = _cli("ask", question, "--model", str(out), "--json", "--temperature", "0")
        answer = json.loads(done.stdout)
        assert answer["mode"] == mode and answer["decided_by"] == "model" and answer["profile"] == "kat"
        assert answer["judge"].strip() == expected.split("<judge>\n")[1].split("\n</judge>")[0]
        assert answer["answer"].strip() == expected.split("<answer>\n")[1].split("\n</answer>")[0]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "katpilot", *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done
