"""Cold-start SFT: tags as tokens, answer-only labels, the run directory, LoRA and full, exact resume,
and (slow) the embedded model learning the AutoThink format and its labelled modes."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from quant_helpers import tiny_checkpoint  # noqa: E402
from train_fixtures import stop_at  # noqa: E402

from katpilot import gate  # noqa: E402
from katpilot.errors import KatpilotError  # noqa: E402
from trainer import run_dir  # noqa: E402
from trainer.chat_data import IGNORE, load_chats, tokenize_chat  # noqa: E402
from trainer.config import SFTConfig, resolve  # noqa: E402
from trainer.data.builder import DataOptions  # noqa: E402
from trainer.data.command import DataRun, run_data  # noqa: E402
from trainer.model_io import AUTOTHINK_TAGS, add_autothink_tokens, load_student  # noqa: E402
from trainer.sft import run_sft  # noqa: E402

SYSTEM = SFTConfig().system_prompt


@pytest.fixture(scope="module")
def tiny(smol_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint("llama", smol_checkpoint, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def arithmetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "arith"
    run_data(_settings(), DataRun(out=out, kinds=("arithmetic",), teacher="programmatic", limit=64))
    return out


def _settings():
    from katpilot import config as config_mod

    return config_mod.load_settings().settings


def test_tags_become_single_tokens_initialised_from_their_sub_words(tiny: Path) -> None:
    model, tokenizer = load_student(tiny)
    pieces = {tag: tokenizer.encode(tag, add_special_tokens=False) for tag in AUTOTHINK_TAGS}
    before = model.get_input_embeddings().weight.detach().clone()
    added = add_autothink_tokens(model, tokenizer)
    assert len(added) == len(AUTOTHINK_TAGS) and len(tokenizer) == before.shape[0] + len(added)
    embed = model.get_input_embeddings().weight
    for tag, new_id in zip(AUTOTHINK_TAGS, added, strict=True):
        assert tokenizer.encode(tag, add_special_tokens=False) == [new_id]
        assert torch.allclose(embed[new_id], before[pieces[tag]].mean(dim=0))
    assert gate.THINK_ON in tokenizer.chat_template  # profile detection finds kat from the template too
    assert add_autothink_tokens(model, tokenizer) == []  # a second call adds nothing


def test_labels_cover_the_answer_only(tiny: Path, arithmetic_data: Path) -> None:
    model, tokenizer = load_student(tiny)
    add_autothink_tokens(model, tokenizer)
    chat = load_chats(arithmetic_data)[0]
    row = tokenize_chat(tokenizer, chat, SYSTEM, 1024)
    assert row is not None
    answer_ids = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE]
    text = tokenizer.decode(answer_ids)
    assert text.startswith(chat[-1]["content"]) and text.endswith("<|im_end|>")
    prompt_text = tokenizer.decode([t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab == IGNORE])
    assert SYSTEM in prompt_text and chat[0]["content"] in prompt_text and gate.JUDGE_OPEN not in prompt_text
    assert tokenize_chat(tokenizer, chat, SYSTEM, 8) is None  # too long: skipped, not cut


@pytest.mark.parametrize("method", ["full", "lora"])
def test_answer_only_loss_is_the_models_own_loss_and_gradient(tiny: Path, arithmetic_data: Path, method: str) -> None:
    from transformers import DataCollatorForSeq2Seq

    from trainer.losses.answer_ce import answer_only_forward, answer_only_loss
    from trainer.sft import with_lora

    model, tokenizer = load_student(tiny)
    added = add_autothink_tokens(model, tokenizer)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    if method == "lora":
        model = with_lora(model, SFTConfig(method="lora"), added)
    model.eval()  # no dropout: both losses see the same network
    rows = [tokenize_chat(tokenizer, chat, SYSTEM, 1024) for chat in load_chats(arithmetic_data)[:6]]
    batch = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)(rows)
    lengths = {len(r["input_ids"]) for r in rows}
    assert len(lengths) > 1  # padding is in the batch: padded positions must not count

    def loss_and_grads(compute) -> tuple[float, list]:
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    theirs, their_grads = loss_and_grads(lambda: model(**batch).loss)
    ours, our_grads = loss_and_grads(lambda: answer_only_loss(model, batch)[0])
    assert ours == pytest.approx(theirs, rel=1e-5)
    for a, b in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    counted = int((batch["labels"][:, 1:] != IGNORE).sum())
    summed, count = answer_only_loss(model, batch, num_items_in_batch=2 * counted)
    # divided by the count over the whole accumulated batch (here twice this one's): half the mean
    assert count == counted and summed.item() == pytest.approx(theirs / 2, rel=1e-5)
    # The hidden states (what distill's MTP heads read) are every position's, as the full forward's.
    with torch.no_grad():
        _, _, outputs = answer_only_forward(model, batch, output_hidden_states=True)
        full = model(**batch, output_hidden_states=True)
    torch.testing.assert_close(outputs.hidden_states[-1], full.hidden_states[-1])


def test_lora_shows_the_user_no_deprecation_warning_from_the_libraries(tiny: Path) -> None:
    """peft reads transformers 5's deprecated `is_gradient_checkpointing` when it wraps a model: a
    warning about the libraries' own call, printed in the middle of `katpilot train`'s progress."""
    from trainer.sft import with_lora

    model, _ = load_student(tiny)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with_lora(model, SFTConfig(method="lora"), [])
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


def test_bad_data_is_one_line_naming_record_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{"messages": [{"role": "user", "content": 3}]}\n'
    )
    with pytest.raises(KatpilotError, match=r"line 2: messages\[0\]\.content must be a string"):
        load_chats(bad)
    with pytest.raises(KatpilotError, match="no training data"):
        load_chats(tmp_path / "missing")
    with pytest.raises(KatpilotError, match="unknown key 'lr'"):
        recipe = tmp_path / "r.toml"
        recipe.write_text("[sft]\nlr = 1\n")
        resolve(recipe, "sft", {})


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_trains_and_writes_its_directory(tiny: Path, arithmetic_data: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / "run"
    flags = {"model": str(tiny), "data": str(arithmetic_data), "method": method, "max_steps": 6, "batch_size": 4}
    result = run_sft(resolve(None, "sft", flags | {"learning_rate": 3e-3, "save_steps": 3}), out)
    assert result.steps == 6 and result.records > 60 and not result.resumed
    rows = run_dir.read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns (a fixed seed, a high rate)
    assert all(r["tokens_per_s"] > 0 for r in rows)
    config = (out / run_dir.CONFIG_FILE).read_text()
    assert f'method = "{method}"  # flag' in config and "lora_alpha = 32  # default" in config
    assert (out / "report.md").read_text().count("Loss ") == 1 and (out / run_dir.PLOT_FILE).stat().st_size > 1000
    final = result.final
    if method == "lora":
        assert (final / "adapter_model.safetensors").exists()
        from peft import AutoPeftModelForCausalLM

        loaded = AutoPeftModelForCausalLM.from_pretrained(final)
    else:
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(final)
    assert loaded.get_input_embeddings().weight.shape[0] == 49152 + len(AUTOTHINK_TAGS)
    student, _ = load_student(final)  # the next stage's model: a LoRA final/ comes merged into its base
    ids = torch.tensor([[1, 500, 49152, 49153, 700]])  # tag tokens included
    with torch.no_grad():
        assert torch.allclose(student(ids).logits, loaded.eval()(ids).logits, atol=1e-4)


def test_resume_after_a_kill_reproduces_the_next_steps_loss(tiny: Path, arithmetic_data: Path, tmp_path: Path) -> None:
    flags = {"model": str(tiny), "data": str(arithmetic_data), "method": "full", "max_steps": 5, "batch_size": 4}
    flags |= {"learning_rate": 3e-3, "save_steps": 2}
    whole = tmp_path / "whole"
    run_sft(resolve(None, "sft", flags), whole)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_sft(
            resolve(None, "sft", flags), cut, callbacks=[stop_at(3)]
        )  # killed after checkpoint-2 ... and step 3? no: before
    cut_off = cut / run_dir.CHECKPOINTS / "checkpoint-4"  # a save cut off by Ctrl-C: no trainer_state.json
    shutil.copytree(cut / run_dir.CHECKPOINTS / "checkpoint-2", cut_off)
    (cut_off / "trainer_state.json").unlink()
    result = run_sft(resolve(None, "sft", flags), cut)  # resumes from checkpoint-2, the last whole one
    assert result.resumed and (cut_off / "trainer_state.json").is_file()  # step 4 saved again, whole
    expected = {r["step"]: r["loss"] for r in run_dir.read_metrics(whole)}
    got = {r["step"]: r["loss"] for r in run_dir.read_metrics(cut)}
    assert sorted(got) == [1, 2, 3, 4, 5]
    assert got[3] == expected[3] and got[5] == expected[5]  # exactly: same data position, RNG and optimizer
    with pytest.raises(KatpilotError, match="another batch_size"):
        run_sft(resolve(None, "sft", flags | {"batch_size": 2}), cut)


def test_an_out_holding_other_files_is_refused_and_a_run_with_no_result_may_start_over(
    tiny: Path, arithmetic_data: Path, tmp_path: Path
) -> None:
    flags = {"model": str(tiny), "data": str(arithmetic_data), "method": "full", "max_steps": 1, "batch_size": 4}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes\n")
    with pytest.raises(KatpilotError, match="holds files and no katpilot sft run"):
        run_sft(resolve(None, "sft", flags), mine)
    assert [p.name for p in mine.iterdir()] == ["report.md"] and (mine / "report.md").read_text() == "my notes\n"
    out = tmp_path / "run"
    with pytest.raises(KatpilotError, match="no model at"):  # a wrong --model: nothing trained
        run_sft(resolve(None, "sft", flags | {"model": str(tmp_path / "nope.gguf")}), out)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(KatpilotError, match=r"cut\.gguf"):
        run_sft(resolve(None, "sft", flags | {"model": str(truncated)}), out)
    with pytest.raises(KatpilotError, match="lora_targets 'no_such_layer' matches no layer"):
        run_sft(resolve(None, "sft", flags | {"method": "lora", "lora_targets": "no_such_layer"}), out)
    assert run_sft(resolve(None, "sft", flags), out).steps == 1  # the right model: the same --out starts over


def test_an_adapter_trained_on_a_gguf_is_not_a_next_stages_model(tmp_path: Path) -> None:
    import json

    from trainer.model_io import load_student

    folder = tmp_path / "gguf-folder"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF")
    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(folder)}))
    with pytest.raises(KatpilotError, match="holds no Hugging Face checkpoint") as caught:
        load_student(adapter)
    assert "merge = true" in caught.value.fix


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cold_start_teaches_the_embedded_model_the_format_and_its_modes(model_path: Path, tmp_path: Path) -> None:
    """About 64 AutoThink records (programmatic arithmetic: short problems off, long ones on), full SFT of
    the embedded SmolLM2-135M from its GGUF; then greedy answers to those prompts parse with the gate
    with no repair (>= 90%) in the labelled mode (>= 90%)."""
    data = tmp_path / "data"
    run_data(
        _settings(),
        DataRun(out=data, kinds=("arithmetic",), teacher="programmatic", limit=64, options=DataOptions(intent_share=0)),
    )
    flags = {"model": str(model_path), "data": str(data), "method": "full", "epochs": 8.0, "batch_size": 8}
    result = run_sft(resolve(None, "sft", flags | {"learning_rate": 2e-4, "save_steps": 1000}), tmp_path / "run")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(result.final)
    tokenizer = AutoTokenizer.from_pretrained(result.final, padding_side="left")
    records = [json.loads(line) for line in (data / "records.jsonl").read_text().splitlines()]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, r["messages"][0]], tokenize=False, add_generation_prompt=True
        )
        for r in records
    ]
    texts = []
    for start in range(0, len(prompts), 16):  # batched greedy decoding, left-padded
        batch = tokenizer(prompts[start : start + 16], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=160, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, batch["input_ids"].shape[1] :]:
            texts.append(tokenizer.decode(row, skip_special_tokens=False).split("<|im_end|>")[0])
    well_formed = labelled = 0
    for record, text in zip(records, texts, strict=True):
        parts = gate.split(text)
        ok = gate.well_formed(text)
        well_formed += ok
        labelled += ok and parts.mode == record["mode"]
    print(f"well-formed {well_formed}/{len(records)}, labelled mode {labelled}/{len(records)}")
    assert well_formed >= 0.9 * len(records), well_formed
    assert labelled >= 0.9 * len(records), labelled


def test_the_command_reports_missing_inputs_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "katpilot", "train", "sft", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "sft needs a model and data" in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "katpilot",
            "train",
            "sft",
            "--out",
            str(tmp_path / "r"),
            "--model",
            "x",
            "--data",
            "nowhere",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no training data at nowhere" in proc.stderr


def test_length_grouped_batches_and_tensorboard_when_missing(
    tiny: Path, arithmetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = {"model": str(tiny), "data": str(arithmetic_data), "method": "full", "max_steps": 2, "batch_size": 4}
    result = run_sft(resolve(None, "sft", flags | {"group_by_length": True}), tmp_path / "grouped")
    assert result.steps == 2 and len(run_dir.read_metrics(tmp_path / "grouped")) == 2
    shown = capsys.readouterr()
    progress = [line for line in shown.err.splitlines() if line.startswith("sft step ")]
    assert len(progress) == 2 and progress[-1].startswith("sft step 2/2  loss ") and "tok/s" in progress[-1]
    assert "{'loss'" not in shown.out + shown.err  # transformers' printed dicts are replaced, not doubled
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(KatpilotError, match="TensorBoard is not installed"):
            run_sft(resolve(None, "sft", flags | {"tensorboard": True}), tmp_path / "tb")


def test_out_of_memory_is_one_line_with_the_knobs_to_turn(tiny: Path, arithmetic_data: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    class RunOutOfMemory(TrainerCallback):  # a failure made on purpose: no machine here runs out
        def on_step_begin(self, args: object, state: object, control: object, **kwargs: object) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    flags = {"model": str(tiny), "data": str(arithmetic_data), "method": "full", "max_steps": 2, "batch_size": 4}
    with pytest.raises(KatpilotError) as caught:
        run_sft(resolve(None, "sft", flags), tmp_path / "oom", callbacks=[RunOutOfMemory()])
    line = caught.value.one_line()
    assert "\n" not in line and "out of memory while training" in line
    assert "batch_size" in line and "gradient_checkpointing" in line


def test_forced_variants_start_at_the_mode_tag_as_serving_forces_a_mode() -> None:
    from katpilot.profiles import PROFILES
    from trainer.chat_data import forced_variants

    user = {"role": "user", "content": "q"}
    on = f"{gate.JUDGE_OPEN}\nlong.\n{gate.JUDGE_CLOSE}\n{gate.THINK_ON}\n{gate.THINK_OPEN}\n1 + 1 = 2.\n"
    on += f"{gate.THINK_CLOSE}\n{gate.ANSWER_OPEN}\n2\n{gate.ANSWER_CLOSE}"
    off = f"{gate.JUDGE_OPEN}\nshort.\n{gate.JUDGE_CLOSE}\n{gate.THINK_OFF}\n{gate.ANSWER_OPEN}\n2\n{gate.ANSWER_CLOSE}"
    plain = "just an answer"
    chats = [[user, {"role": "assistant", "content": text}] for text in (on, off, plain)] * 100
    every = forced_variants(chats, 1.0, seed=0)
    assert len(every) == 200  # the plain answers have no mode tag to start from
    kat = PROFILES["kat"]
    assert {v[-1]["content"][: len(kat.prefill("on"))] for v in every[::2]} == {kat.prefill("on")}
    assert {v[-1]["content"][: len(kat.prefill("off"))] for v in every[1::2]} == {kat.prefill("off")}
    assert all(gate.JUDGE_OPEN not in v[-1]["content"] and v[0] == user for v in every)
    some = forced_variants(chats, 0.25, seed=0)
    assert 25 <= len(some) <= 75 and some == forced_variants(chats, 0.25, seed=0)
    assert forced_variants(chats, 0.0, seed=0) == []
    with pytest.raises(KatpilotError, match="forced_share"):
        SFTConfig(forced_share=1.5)


def test_precision_follows_the_hardware_and_refuses_what_it_lacks(tmp_path: Path) -> None:
    from trainer.precision import cpu_has_native_bf16, use_bf16
    from trainer.sft import training_arguments

    amx = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n"
    assert cpu_has_native_bf16(amx) and cpu_has_native_bf16("flags : avx512_bf16 avx2\n")
    assert not cpu_has_native_bf16("flags\t: fpu sse avx2 avx512f\n") and not cpu_has_native_bf16("")
    assert use_bf16("auto", False, False, True) and not use_bf16("auto", False, False, False)
    assert use_bf16("auto", True, True, False) and not use_bf16("auto", True, False, True)
    assert use_bf16("bf16", False, False, False) and not use_bf16("fp32", True, True, True)
    with pytest.raises(KatpilotError, match="this GPU has no bf16"):
        use_bf16("bf16", True, False, True)
    with pytest.raises(KatpilotError, match="precision must be one of auto, bf16, fp32"):
        SFTConfig(precision="fp16")
    if not torch.cuda.is_available():  # what the Trainer is given on this machine's CPU
        assert training_arguments(SFTConfig(precision="bf16"), tmp_path / "a").bf16 is True
        assert training_arguments(SFTConfig(precision="fp32"), tmp_path / "b").bf16 is False
        assert training_arguments(SFTConfig(), tmp_path / "c").bf16 is cpu_has_native_bf16()
