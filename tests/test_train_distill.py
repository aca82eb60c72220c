"""`katpilot train distill`: a tiny student learns from the embedded model (llama.cpp teacher, cached top-k)
with ULD + MTP; the repository's text with FIM; the live teacher; heads saved; resume exact."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from quant_helpers import tiny_checkpoint  # noqa: E402
from train_fixtures import PLANTED_SECRET, stop_at, write_repo  # noqa: E402

from katpilot.errors import KatpilotError  # noqa: E402
from trainer import run_dir  # noqa: E402
from trainer.config import DistillConfig, resolve  # noqa: E402
from trainer.data.builder import DataOptions  # noqa: E402
from trainer.data.command import DataRun, run_data  # noqa: E402
from trainer.distill import run_distill  # noqa: E402
from trainer.distill_data import build_examples  # noqa: E402
from trainer.losses.uld import align_answer_positions, forward_kl  # noqa: E402
from trainer.model_io import ensure_fim_tokens, fim_tokens, load_student  # noqa: E402
from trainer.teacher import TransformersTeacher  # noqa: E402


def _settings() -> Any:
    from katpilot import config as config_mod

    return config_mod.load_settings().settings


@pytest.fixture(scope="module")
def tiny(smol_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint("llama", smol_checkpoint, tmp_path_factory.mktemp("tiny-student"))


@pytest.fixture(scope="module")
def arithmetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """48 training records and 12 held-out ones (other seeds) from the programmatic teacher."""
    root = tmp_path_factory.mktemp("distill-data")
    run_data(_settings(), DataRun(out=root / "train", kinds=("arithmetic",), teacher="programmatic", limit=48))
    held = DataRun(
        out=root / "held", kinds=("arithmetic",), teacher="programmatic", limit=12, options=DataOptions(seed=7)
    )
    run_data(_settings(), held)
    return root / "train", root / "held"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(tmp_path_factory.mktemp("distill-repo") / "shop")


def _flags(**extra: Any) -> dict[str, Any]:
    base = {"method": "full", "batch_size": 4, "learning_rate": 2e-3, "save_steps": 1000, "mtp_depth": 1}
    return base | extra


def test_engine_reports_each_continuation_tokens_distribution(model_path: Path) -> None:
    """llama.cpp's top-k rows: one per continuation token, descending, and the whole vocabulary sums to 1."""
    from dataclasses import replace

    from katpilot.models import load_engine

    engine = load_engine(replace(_settings(), model=str(model_path)))
    try:
        prompt, continuation = "def add(a, b):\n", "    return a + b\n"
        tokens = engine.count_tokens(continuation)
        rows = engine.continuation_top_logprobs(prompt, continuation, 8)
        assert rows is not None and rows.shape == (tokens, 8)
        assert (rows[:, :-1] >= rows[:, 1:]).all() and (rows <= 0).all()
        full = engine.continuation_top_logprobs(prompt, continuation, 10**6)  # more than the vocabulary
        assert full is not None and full.shape[1] == 49152
        assert all(abs(math.fsum(math.exp(v) for v in row) - 1) < 1e-3 for row in full.tolist())
        assert abs(full[:, :8] - rows).max() < 1e-5  # the same distributions, whatever k
        hot = engine.continuation_top_logprobs(prompt, continuation, 8, temperature=0.5)
        assert hot is not None and (hot[:, 0] >= rows[:, 0] - 1e-6).all()  # a lower temperature sharpens
    finally:
        engine.close()


def test_repository_text_becomes_fim_windows_with_secrets_withheld(tiny: Path, repo: Path) -> None:
    model, tokenizer = load_student(tiny)
    assert fim_tokens(tokenizer) is None  # SmolLM2 has none: it gets StarCoder's, which the GGUF reader knows
    added = ensure_fim_tokens(model, tokenizer)
    fim = fim_tokens(tokenizer)
    assert fim == ("<fim_prefix>", "<fim_suffix>", "<fim_middle>") and len(added) == 3
    assert [tokenizer.encode(t, add_special_tokens=False) for t in fim] == [[i] for i in added]
    cfg = DistillConfig(model=str(tiny), repo=str(repo), repo_chunk_tokens=64, fim_rate=0.5)
    built = build_examples(tokenizer, "", str(repo), cfg)
    kinds = {e.kind for e in built.rows}
    assert kinds == {"text", "fim"}, kinds
    for example in built.rows:
        text = tokenizer.decode(example.input_ids)
        assert PLANTED_SECRET not in text and PLANTED_SECRET not in example.teacher.continuation
        predicted = [example.input_ids[p + 1] for p, on in enumerate(example.aligned) if on]
        middle = tokenizer(example.teacher.continuation, add_special_tokens=False)["input_ids"]
        assert predicted == middle  # the aligned positions predict exactly the teacher's continuation
        if example.kind == "fim":
            assert text.startswith(fim[0]) and fim[2] in text and example.input_ids[-1] == tokenizer.eos_token_id
    again = build_examples(tokenizer, "", str(repo), cfg)
    assert [e.input_ids for e in again.rows] == [e.input_ids for e in built.rows]  # seeded


def _heldout_kl(student_dir: Path, teacher: TransformersTeacher, held: Path, tokenizer_dir: Path) -> float:
    """Mean KL(teacher || student) over the held-out answers' aligned positions (full vocabularies)."""
    model, tokenizer = load_student(student_dir)
    cfg = DistillConfig(model=str(student_dir), data=str(held))
    examples = build_examples(tokenizer, str(held), "", cfg).rows
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            ids, aligned = teacher.encode(example.teacher)
            t_logits = teacher.logits(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
            s_logits = model(input_ids=torch.tensor([example.input_ids])).logits
            rows, s_pos, t_pos = align_answer_positions(torch.tensor([example.aligned]), torch.tensor([aligned]))
            kl = forward_kl(
                s_logits[rows, s_pos].unsqueeze(0),
                t_logits[rows, t_pos].unsqueeze(0),
                torch.ones(1, rows.numel(), dtype=torch.bool),
                reduction="sum",
            )
            total, count = total + float(kl), count + rows.numel()
    return total / count


def test_a_small_student_learns_from_the_embedded_model_with_uld(
    tiny: Path, model_path: Path, smol_checkpoint: Path, arithmetic: tuple[Path, Path], repo: Path, tmp_path: Path
) -> None:
    """The teacher is the embedded GGUF through llama.cpp (top-k cached once); the student a tiny llama of
    the same tokenizer, so the held-out KL to the teacher (transformers, full vocabulary) can be measured."""
    train, held = arithmetic
    teacher = TransformersTeacher(str(smol_checkpoint))
    before = _heldout_kl(tiny, teacher, held, tiny)
    flags = _flags(model=str(tiny), data=str(train), teacher=str(model_path), repo=str(repo), max_steps=30)
    flags |= {"repo_chunk_tokens": 64, "teacher_topk": 32}
    out = tmp_path / "run"
    result = run_distill(resolve(None, "distill", flags, schema=DistillConfig), out, settings=_settings())
    manifest = json.loads((out / "teacher" / "manifest.json").read_text())
    assert manifest["k"] == 32 and manifest["examples"] == result.examples
    rows = run_dir.read_metrics(out)
    assert {"loss_ce", "loss_uld", "loss_mtp"} <= set(rows[0])
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert rows[-1]["loss_uld"] < rows[0]["loss_uld"]
    after = _heldout_kl(result.final, teacher, held, tiny)
    print(f"held-out KL to the teacher: {before:.3f} -> {after:.3f}; loss {first:.3f} -> {last:.3f}")
    assert after < 0.8 * before, (before, after)
    # The final model carries its MTP heads in DeepSeek-V3's layout, and they reload bit-exact.
    from trainer.mtp import load_mtp_heads

    config = json.loads((result.final / "config.json").read_text())
    assert config["num_nextn_predict_layers"] == 1
    model, _ = load_student(result.final)
    heads = load_mtp_heads(model, result.final)
    from safetensors.torch import load_file

    saved = load_file(str(result.final / "mtp.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in heads.checkpoint_tensors().items())
    assert "report.png" in (out / "report.md").read_text()
    # A second run reuses the cache rather than asking the teacher again.
    stamp = (out / "teacher" / "topk.safetensors").stat().st_mtime_ns
    run_distill(resolve(None, "distill", flags | {"max_steps": 31}, schema=DistillConfig), tmp_path / "run2")
    assert (out / "teacher" / "topk.safetensors").stat().st_mtime_ns == stamp


def test_live_teacher_with_kl_and_lora(
    tiny: Path, smol_checkpoint: Path, arithmetic: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = arithmetic
    flags = _flags(model=str(tiny), data=str(train), teacher=str(smol_checkpoint), max_steps=3, method="lora")
    flags |= {"teacher_mode": "live", "divergence": "kl"}
    out = tmp_path / "live"
    result = run_distill(resolve(None, "distill", flags, schema=DistillConfig), out)
    rows = run_dir.read_metrics(out)
    assert len(rows) == 3 and all(r["loss_kl"] > 0 for r in rows)
    assert (result.final / "adapter_config.json").is_file() and (result.final / "mtp_heads.safetensors").is_file()
    assert not (out / "teacher").exists()  # live: nothing cached


def test_resume_after_a_kill_reproduces_the_next_steps_loss(
    tiny: Path, arithmetic: tuple[Path, Path], tmp_path: Path
) -> None:
    """With MTP heads: their weights and optimizer state come back from the checkpoint."""
    train, _ = arithmetic
    flags = _flags(model=str(tiny), data=str(train), max_steps=4, save_steps=2)
    whole = tmp_path / "whole"
    run_distill(resolve(None, "distill", flags, schema=DistillConfig), whole)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_distill(resolve(None, "distill", flags, schema=DistillConfig), cut, callbacks=[stop_at(3)])
    assert (cut / "checkpoints" / "checkpoint-2" / "mtp_heads.safetensors").is_file()
    result = run_distill(resolve(None, "distill", flags, schema=DistillConfig), cut)
    assert result.resumed
    expected = {r["step"]: (r["loss"], r["loss_mtp"]) for r in run_dir.read_metrics(whole)}
    got = {r["step"]: (r["loss"], r["loss_mtp"]) for r in run_dir.read_metrics(cut)}
    assert got[3] == expected[3] and got[4] == expected[4]


def test_bad_settings_are_one_line(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(KatpilotError, match="needs teacher_mode = live"):
        resolve(None, "distill", {"divergence": "kl"}, schema=DistillConfig)
    with pytest.raises(KatpilotError, match="distill needs a model and data or a repo"):
        run_distill(resolve(None, "distill", {"model": str(tiny)}, schema=DistillConfig), tmp_path / "r")
    with pytest.raises(KatpilotError, match="live teacher must be a Hugging Face checkpoint"):
        flags = {"model": str(tiny), "data": "x", "teacher": "model.gguf", "teacher_mode": "live"}
        run_distill(resolve(None, "distill", flags, schema=DistillConfig), tmp_path / "r")
