"""Cold-start AutoThink SFT (`katpilot train sft`): the format and a first mode prior, on transformers.

What comes from the libraries: the loop, gradient accumulation, mixed precision, checkpoints and
resume (optimizer, scheduler, RNG, data position), DDP/FSDP under `accelerate launch`/`torchrun`
(`transformers.Trainer`), LoRA (`peft`), padding (`DataCollatorForSeq2Seq`). What is ours: loading
a GGUF student and adding the AutoThink tags (`model_io`), the answer-only labels with serving's
system prompt (`chat_data`), a loss that projects those answer tokens only
(`losses.answer_ce`), the run directory with its config sources, metrics and report (`run_dir`).
"""

from __future__ import annotations

import errno
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError
from trainer import run_dir
from trainer.chat_data import forced_variants, load_chats, tokenize_chat
from trainer.config import Resolved, SFTConfig
from trainer.model_io import add_autothink_tokens, ensure_fim_tokens, load_student
from trainer.precision import bf16_here
from trainer.progress import metrics_callback, replace_default_display

TABLE = "sft"


@dataclass(frozen=True)
class SFTResult:
    out: Path
    records: int
    skipped: int  # records longer than max_length
    steps: int
    final: Path
    resumed: bool


def run_sft(resolved: Resolved, out: Path, callbacks: Sequence[Any] = ()) -> SFTResult:
    """Train (or resume) and write final/ and the report. `callbacks`: extra transformers callbacks."""
    from transformers import Trainer, set_seed

    from trainer.losses.answer_ce import answer_only_loss
    from trainer.mtp import carry_heads_on_save
    from trainer.packing import REAL_TOKENS

    cfg = resolved.config
    if not cfg.model or not cfg.data:
        raise KatpilotError("sft needs a model and data", "give --model and --data (or set them in the recipe)")
    chats = load_chats(cfg.data)  # bad data fails before the model loads
    chats += forced_variants(chats, cfg.forced_share, cfg.seed)
    resumed = run_dir.prepare(out, resolved, TABLE)
    set_seed(cfg.seed)
    model, tokenizer = trainable_student(cfg)
    rows = [tokenize_chat(tokenizer, chat, cfg.system_prompt, cfg.max_length) for chat in chats]
    examples = [r for r in rows if r is not None]
    if not examples:
        raise KatpilotError(f"every record is longer than max_length {cfg.max_length}", "raise --max-length")

    metrics = run_dir.MetricsLog(out)

    class Counting(Trainer):
        """Counts the tokens each step trains on (for tokens/s); the loss projects the answer tokens only
        (`answer_only_loss`: the model's own loss, about a third less time per step on a 135M model)."""

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            real = inputs.pop(REAL_TOKENS, None)  # packed rows carry their count of real (unpadded) tokens
            metrics.tokens += int(real if real is not None else inputs["attention_mask"].sum())
            if return_outputs:  # evaluation asks for the outputs too; training never does
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss, _ = answer_only_loss(model, inputs, num_items_in_batch)
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # the count was summed over processes
            return loss

    trainer = Counting(
        model=model,
        args=training_arguments(cfg, out),
        train_dataset=Rows(examples),
        data_collator=batch_collator(cfg, model, tokenizer, examples),
        callbacks=[metrics_callback(metrics, "sft"), *carry_heads_on_save(Path(cfg.model), cfg.method), *callbacks],
    )
    replace_default_display(trainer)
    result = train(trainer, resumed)
    final = save_final(trainer, model, tokenizer, cfg, out)
    steps = int(result.global_step)
    facts = [
        f"model `{cfg.model}`, {cfg.method}"
        + (f" (rank {cfg.lora_rank}, alpha {cfg.lora_alpha})" if cfg.method == "lora" else ""),
        f"data `{cfg.data}`: {len(examples)} records trained, {len(rows) - len(examples)} skipped (longer than {cfg.max_length} tokens)",
        f"{steps} steps, batch {cfg.batch_size} x {cfg.grad_accum}, learning rate {cfg.lr:g}, seed {cfg.seed}",
        f"final model: `{final}`",
    ]
    run_dir.write_report(out, f"SFT run {out.name}", facts)
    finish(trainer)
    return SFTResult(out, len(examples), len(rows) - len(examples), steps, final, resumed)


def trainable_student(cfg: SFTConfig, fim: bool = False) -> tuple[Any, Any]:
    """The student with the AutoThink tags (and FIM tokens if asked and missing), a pad token, LoRA (or
    not) and gradient checkpointing. New token rows train under LoRA too."""
    model, tokenizer = load_student(cfg.model)
    added = add_autothink_tokens(model, tokenizer) + (ensure_fim_tokens(model, tokenizer) if fim else [])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.method == "lora":
        model = with_lora(model, cfg, added)
    if cfg.gradient_checkpointing:  # transformers 5 renamed it (the old name warns)
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        model.enable_input_require_grads()
    return model, tokenizer


def batch_collator(cfg: SFTConfig, model: Any, tokenizer: Any, examples: Sequence[Any]) -> Any:
    """Packed rows (`trainer.packing`), or batches padded to their longest record when `padding_free`
    is off or the model's attention would let packed records see each other (said once, on stderr)."""
    from transformers import DataCollatorForSeq2Seq

    from trainer.packing import PackedCollator, packing_holds

    if cfg.padding_free and len(examples) > 1:
        if packing_holds(model, examples[:2]):
            return PackedCollator(tokenizer.pad_token_id)
        print(
            "katpilot: this model's attention does not keep packed records apart, so its batches are padded "
            "(padding_free = false skips this check)",
            file=sys.stderr,
        )
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def training_arguments(cfg: SFTConfig, out: Path) -> Any:
    """transformers' arguments from a stage's settings: bf16 autocast where the hardware has it (`precision`)."""
    import torch
    from transformers import TrainingArguments

    use_gpu = torch.cuda.is_available()
    bf16 = bf16_here(cfg.precision)
    report_to = []
    if cfg.tensorboard:
        if importlib.util.find_spec("tensorboard") is None:
            raise KatpilotError("tensorboard = true, but TensorBoard is not installed", "pip install tensorboard")
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(out / "tensorboard"))
        report_to = ["tensorboard"]
    return TrainingArguments(
        output_dir=str(out / run_dir.CHECKPOINTS),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the steps (transformers 5)
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not use_gpu,
        bf16=bf16,
        report_to=report_to,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}  # why a save fails


def train(trainer: Any, resumed: bool) -> Any:
    """trainer.train(), resuming from the run's last checkpoint; out of memory is one line with the fixes."""
    import torch

    try:
        return trainer.train(resume_from_checkpoint=True if resumed else None)
    except OSError as exc:
        if exc.errno not in UNWRITABLE:
            raise
        raise KatpilotError(  # a checkpoint that cannot be written: a full disk, a read-only directory
            f"cannot write {exc.filename or trainer.args.output_dir} ({exc.strerror or exc})",
            "free disk space or make --out writable, then rerun: the run resumes from its last whole checkpoint",
        ) from None
    except torch.OutOfMemoryError:
        raise KatpilotError(
            "out of memory while training",
            "lower batch_size (raise grad_accum to keep the effective batch), lower max_length, "
            "use method = lora, or set gradient_checkpointing = true",
        ) from None


class Rows:
    """A map-style dataset over the tokenized records (a list is all the Trainer needs)."""

    def __init__(self, rows: Sequence[Any]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        return self.rows[i]


def with_lora(model: Any, cfg: SFTConfig, new_tokens: list[int]) -> Any:
    """peft LoRA on the linear layers; the new tag rows train too (peft's trainable tokens, tied head included).

    An adapter with new token rows cannot go into a llama.cpp adapter GGUF (it cannot add tokens):
    export such a run merged (`katpilot quant export final/ --lora ... --merge`, or `merge = true`).
    """
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = cfg.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        trainable_token_indices=new_tokens or None,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft reads `is_gradient_checkpointing`, which transformers 5 deprecates: a warning about the
        # libraries' own call that a user of `katpilot train` can do nothing about.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        try:
            return get_peft_model(model, config)
        except ValueError as exc:  # peft's NoMatchingPeftModuleError: no module of the model has those names
            raise KatpilotError(
                f"lora_targets {cfg.lora_targets!r} matches no layer of the model ({str(exc).splitlines()[0][:120]})",
                'use "all-linear", or names of its linear layers such as q_proj,v_proj',
            ) from None


def save_final(trainer: Any, model: Any, tokenizer: Any, cfg: SFTConfig, out: Path) -> Path:
    """final/ (the adapter alone for LoRA; final/merged/ on request), written by the main process."""
    from trainer.mtp import carry_mtp_heads

    final = out / run_dir.FINAL
    trainer.save_model(str(final))  # transformers saves on the main process only
    main = run_dir.is_main_process()
    source = Path(cfg.model)  # MTP heads from distillation ride along, untrained here (a LoRA's stay in its base)
    if main:
        tokenizer.save_pretrained(final)
        if cfg.method == "full" and source.is_dir():
            carry_mtp_heads(source, final)
    if cfg.method == "lora" and cfg.merge:
        merged = final / "merged"
        if main:
            model.merge_and_unload().save_pretrained(merged)
            tokenizer.save_pretrained(merged)
            if source.is_dir():
                carry_mtp_heads(source, merged)
        return merged
    return final


def finish(trainer: Any) -> None:
    """Ends a multi-process run cleanly (destroys the process group; without it a rank may abort at exit)."""
    trainer.accelerator.end_training()
