"""Distillation (`katpilot train distill`): CE + lambda * ULD to a teacher, plus MTP, on chats and the team's code.

The loop is SFT's (`transformers.Trainer`, the same run directory, LoRA or full, resume); what changes
is the loss, computed here per micro-batch as a mean and scaled for gradient accumulation by the
Trainer (`loss_is_scaled_for_ga = False`):

    loss = CE(labels) + uld_weight * D(student, teacher) + MTP(lambda scheduled as DeepSeek-V3)

- D is ULD (`losses.uld`) against the cached top-k (`teacher.TeacherCache`) or the live teacher's
  logits; with a live teacher of the same tokenizer, `kl` or `jsd` on the shared vocabulary.
- MTP heads (`trainer.mtp`) ride beside the student, not inside it: the model's weights stay the
  model's. Their parameters are one more optimizer group (so checkpoints hold their optimizer
  state), their gradients are averaged across processes by hand (DDP refuses parameters used outside
  the wrapped forward), and gradient clipping (`max_grad_norm`) covers the model only. They are saved
  as `mtp_heads.safetensors` in every checkpoint (read back on resume), and in the final model under
  DeepSeek-V3's names (`save_mtp_heads`), which `katpilot quant export` writes to the companion GGUF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from katpilot.errors import KatpilotError
from trainer import run_dir
from trainer.config import DistillConfig, Resolved
from trainer.distill_data import Example, build_examples
from trainer.progress import metrics_callback, replace_default_display
from trainer.sft import Rows, finish, save_final, train, trainable_student, training_arguments

TABLE = "distill"
HEADS_IN_CHECKPOINT = "mtp_heads.safetensors"


@dataclass(frozen=True)
class DistillResult:
    out: Path
    examples: int
    skipped: int
    steps: int
    final: Path
    resumed: bool


def run_distill(
    resolved: Resolved, out: Path, callbacks: Sequence[Any] = (), settings: Any = None, echo: Any = print
) -> DistillResult:
    """Train (or resume) the student against the teacher; write final/ (with MTP heads) and the report."""
    import torch
    from transformers import Trainer, set_seed

    from trainer.losses.answer_ce import answer_only_forward
    from trainer.losses.uld import align_answer_positions, forward_kl, jsd, uld_loss, uld_loss_topk
    from trainer.mtp import MTPHeads, mtp_lambda, mtp_loss

    cfg = _distill_config(resolved)
    if not cfg.model or not (cfg.data or cfg.repo):
        raise KatpilotError("distill needs a model and data or a repo", "give --model and --data and/or --repo")
    if cfg.teacher_mode == "live" and cfg.teacher and not _is_dir(cfg.teacher):
        raise KatpilotError(
            f"a live teacher must be a Hugging Face checkpoint directory, not {cfg.teacher}",
            "give teacher_mode = cache for a GGUF (llama.cpp) teacher",
        )
    resumed = run_dir.prepare(out, resolved, TABLE)
    set_seed(cfg.seed)
    model, tokenizer = trainable_student(cfg, fim=bool(cfg.repo) and cfg.fim_rate > 0)
    built = build_examples(tokenizer, cfg.data, cfg.repo, cfg)
    examples = built.rows

    live = None
    cache = None
    if cfg.teacher and cfg.teacher_mode == "live":
        from trainer.teacher import TransformersTeacher

        live = TransformersTeacher(cfg.teacher)
        if cfg.divergence != "uld" and not _same_ids(live.tokenizer, tokenizer):
            raise KatpilotError(
                f"divergence {cfg.divergence} needs the teacher's tokenizer to be the student's",
                "use divergence = uld across tokenizers",
            )
    elif cfg.teacher:
        cache = _teacher_cache(cfg, examples, out, settings, echo)

    heads = MTPHeads(_core(model), cfg.mtp_depth) if cfg.mtp_depth else None
    if heads is not None:
        checkpoint = run_dir.last_checkpoint(out) if resumed else None
        if checkpoint is not None:
            _load_heads(heads, checkpoint / HEADS_IN_CHECKPOINT)

    metrics = run_dir.MetricsLog(out)
    rows = [_row(example, i, live) for i, example in enumerate(examples)]

    class Distilling(Trainer):
        loss_is_scaled_for_ga = False  # our loss is a per-micro-batch mean: the Trainer divides by GA

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            metrics.tokens += int(inputs["attention_mask"].sum())
            aligned = inputs.pop("aligned")
            extra = {k: inputs.pop(k) for k in list(inputs) if k.startswith("teacher_")}
            if cache is None and live is None:  # no teacher: only the labelled positions need logits
                loss, _, outputs = answer_only_forward(model, inputs, output_hidden_states=heads is not None)
            else:  # the divergence reads the logits at every aligned position
                outputs = model(**inputs, output_hidden_states=heads is not None)
                loss = outputs.loss
            parts: dict[str, float] = {"ce": float(loss.detach())}
            if cache is not None:
                d = uld_loss_topk(
                    outputs.logits,
                    aligned,
                    extra["teacher_topk"],
                    extra["teacher_mask"],
                    student_temperature=cfg.student_temperature,
                )
            elif live is not None:
                teacher_logits = live.logits(extra["teacher_input_ids"], extra["teacher_attention_mask"])
                if cfg.divergence == "uld":
                    d = uld_loss(
                        outputs.logits,
                        teacher_logits,
                        aligned,
                        extra["teacher_mask"],
                        cfg.student_temperature,
                        cfg.teacher_temperature,
                    )
                else:  # same tokenizer: the paired positions' full distributions
                    rows, student_pos, teacher_pos = align_answer_positions(aligned, extra["teacher_mask"])
                    divergence = forward_kl if cfg.divergence == "kl" else jsd
                    d = divergence(
                        outputs.logits[rows, student_pos].unsqueeze(0),
                        teacher_logits[rows, teacher_pos].unsqueeze(0),
                        torch.ones(1, rows.numel(), dtype=torch.bool),
                        cfg.student_temperature,
                    )
            else:
                d = None
            if d is not None:
                loss = loss + cfg.uld_weight * d
                parts[cfg.divergence] = float(d.detach())
            if heads is not None:
                lam = cfg.mtp_weight or mtp_lambda(self.state.global_step, max(1, self.state.max_steps))
                mtp = mtp_loss(
                    heads,
                    inputs["input_ids"],
                    inputs["labels"],
                    outputs.hidden_states[-1],
                    lam=lam,
                    attention_mask=inputs["attention_mask"],
                )
                loss = loss + mtp.loss
                parts["mtp"] = float(mtp.loss.detach())
            metrics.add_parts(parts)
            return (loss, outputs) if return_outputs else loss

        def create_optimizer(self, model: Any = None) -> Any:
            optimizer = super().create_optimizer(model)
            if heads is not None and not any(g.get("mtp_heads") for g in optimizer.param_groups):
                group = {"params": list(heads.parameters()), "weight_decay": cfg.weight_decay, "mtp_heads": True}
                optimizer.add_param_group(group)
            return optimizer

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            loss = super().training_step(model, inputs, num_items_in_batch)
            if heads is not None:
                _average_gradients_across_processes(heads)
            return loss

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            super()._save(output_dir, state_dict)
            if heads is not None and output_dir is not None and self.args.should_save:
                _write_heads(heads, Path(output_dir) / HEADS_IN_CHECKPOINT)

    extra_callbacks = [_zero_head_gradients(heads)] if heads is not None else []
    trainer = Distilling(
        model=model,
        args=training_arguments(cfg, out),
        train_dataset=Rows(rows),
        data_collator=Collator(tokenizer.pad_token_id, cache, live),
        callbacks=[metrics_callback(metrics, "distill"), *extra_callbacks, *callbacks],
    )
    replace_default_display(trainer)
    if heads is not None and trainer.is_fsdp_enabled:
        raise KatpilotError(
            "MTP heads train under DDP, not FSDP: they share the embedding and output head FSDP shards",
            "launch with configs/accelerate/ddp.yaml, or set mtp_depth = 0",
        )
    if heads is not None:
        heads.to(trainer.args.device)  # the Trainer placed the model; the heads follow it
    if live is not None:
        live.model.to(trainer.args.device)
    result = train(trainer, resumed)
    final = save_final(trainer, model, tokenizer, cfg, out)
    if heads is not None and run_dir.is_main_process():
        _save_final_heads(heads, final)
    steps = int(result.global_step)
    kinds = {kind: sum(e.kind == kind for e in examples) for kind in ("chat", "text", "fim")}
    teacher_line = (
        f"teacher `{cfg.teacher}` ({cfg.teacher_mode}, {cfg.divergence}, weight {cfg.uld_weight:g})"
        if cfg.teacher
        else "no teacher: next-token and MTP only"
    )
    facts = [
        f"model `{cfg.model}`, {cfg.method}; {teacher_line}",
        f"examples: {kinds['chat']} chats, {kinds['text']} text windows, {kinds['fim']} fill-in-the-middle; "
        f"{built.skipped} skipped (longer than {cfg.max_length} tokens)",
        "FIM tokens: " + (" ".join(built.fim_tokens) if built.fim_tokens else "none in the student's vocabulary"),
        f"MTP depth {cfg.mtp_depth}" + (f", weight {cfg.mtp_weight:g}" if cfg.mtp_weight else ", weight 0.3 then 0.1"),
        f"{steps} steps, batch {cfg.batch_size} x {cfg.grad_accum}, learning rate {cfg.lr:g}, seed {cfg.seed}",
        f"final model: `{final}`",
    ]
    run_dir.write_report(out, f"Distillation run {out.name}", facts)
    finish(trainer)
    return DistillResult(out, len(examples), built.skipped, steps, final, resumed)


class Collator:
    """Right-pads the student's rows, and the teacher's cached rows or token ids, into one batch."""

    def __init__(self, pad_id: int, cache: Any, live: Any) -> None:
        self.pad_id, self.cache, self.live = pad_id, cache, live

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        size = len(rows)
        length = max(len(r["input_ids"]) for r in rows)
        batch = {
            "input_ids": torch.full((size, length), self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros(size, length, dtype=torch.long),
            "labels": torch.full((size, length), -100, dtype=torch.long),
            "aligned": torch.zeros(size, length, dtype=torch.bool),
        }
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            batch["input_ids"][i, :n] = torch.tensor(r["input_ids"])
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = torch.tensor(r["labels"])
            batch["aligned"][i, :n] = torch.tensor(r["aligned"])
        if self.cache is not None:
            cached = [self.cache.rows(r["index"]) for r in rows]
            width = max(1, max(c.shape[0] for c in cached))
            k = max(c.shape[1] for c in cached)
            batch["teacher_topk"] = torch.full((size, width, k), float("-inf"))
            batch["teacher_mask"] = torch.zeros(size, width, dtype=torch.bool)
            for i, c in enumerate(cached):
                batch["teacher_topk"][i, : c.shape[0], : c.shape[1]] = c
                batch["teacher_mask"][i, : c.shape[0]] = True
        elif self.live is not None:
            width = max(len(r["teacher_ids"]) for r in rows)
            pad = self.live.tokenizer.pad_token_id or 0
            batch["teacher_input_ids"] = torch.full((size, width), pad, dtype=torch.long)
            batch["teacher_attention_mask"] = torch.zeros(size, width, dtype=torch.long)
            batch["teacher_mask"] = torch.zeros(size, width, dtype=torch.bool)
            for i, r in enumerate(rows):
                n = len(r["teacher_ids"])
                batch["teacher_input_ids"][i, :n] = torch.tensor(r["teacher_ids"])
                batch["teacher_attention_mask"][i, :n] = 1
                batch["teacher_mask"][i, :n] = torch.tensor(r["teacher_aligned"])
        return batch


def _row(example: Example, index: int, live: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "input_ids": example.input_ids,
        "labels": example.labels,
        "aligned": example.aligned,
        "index": index,
    }
    if live is not None:
        row["teacher_ids"], row["teacher_aligned"] = live.encode(example.teacher)
    return row


def _teacher_cache(cfg: DistillConfig, examples: list[Example], out: Path, settings: Any, echo: Any) -> Any:
    """The cache of top-k rows, written first by the teacher (llama.cpp or transformers) when missing."""
    from dataclasses import replace

    from katpilot.eval.command import progress_bar
    from trainer.teacher import EngineTeacher, TransformersTeacher, cache_fingerprint, open_cache

    fingerprint = cache_fingerprint(cfg.teacher, cfg.teacher_topk, cfg.teacher_temperature, examples)
    holder: list[Any] = []

    def make() -> Any:
        echo(f"katpilot: caching the teacher's top-{cfg.teacher_topk} log-probabilities for {len(examples)} examples")
        if _is_dir(cfg.teacher):
            return TransformersTeacher(cfg.teacher)
        from katpilot import config as config_mod
        from katpilot.models import load_engine

        base = settings if settings is not None else config_mod.load_settings().settings
        engine = load_engine(replace(base, model=cfg.teacher))
        holder.append(engine)
        return EngineTeacher(engine)

    try:
        import sys

        with progress_bar(sys.stderr.isatty(), "teacher") as progress:
            return open_cache(out, fingerprint, examples, make, progress)
    finally:
        for engine in holder:
            engine.close()


def _distill_config(resolved: Resolved) -> DistillConfig:
    if not isinstance(resolved.config, DistillConfig):
        raise TypeError("run_distill takes settings resolved with schema=DistillConfig")
    return resolved.config


def _is_dir(spec: str) -> bool:
    return Path(spec).expanduser().is_dir()


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def _core(model: Any) -> Any:
    """The transformers model under a peft wrapper (what MTP heads attach to)."""
    return model.get_base_model() if _is_peft(model) else model


def _same_ids(teacher: Any, student: Any) -> bool:
    """Every teacher token has the same id in the student (which may have added tags after them)."""
    ids = student.get_vocab()
    return all(ids.get(token) == i for token, i in teacher.get_vocab().items())


def _zero_head_gradients(heads: Any) -> Any:
    """A callback: after each optimizer step the Trainer zeroes the model's gradients only; the heads'
    are zeroed here (else they would add up across steps)."""
    from transformers import TrainerCallback

    class ZeroHeadGradients(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            heads.zero_grad(set_to_none=True)

    return ZeroHeadGradients()


def _average_gradients_across_processes(heads: Any) -> None:
    """The heads live beside the DDP-wrapped model (used outside its forward, DDP would refuse them),
    so their gradients are averaged here, as DDP averages the model's."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    for param in heads.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad.div_(dist.get_world_size())


def _write_heads(heads: Any, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {name: value.to("cpu").contiguous() for name, value in heads.checkpoint_tensors().items()}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"format": "pt"})
    partial.replace(path)


def _load_heads(heads: Any, path: Path) -> None:
    from safetensors.torch import load_file

    if not path.is_file():
        raise KatpilotError(f"the checkpoint lacks its MTP heads ({path})", "delete the run directory to start over")
    heads.load_checkpoint_tensors(load_file(str(path)))


def _save_final_heads(heads: Any, final: Path) -> None:
    """The heads in DeepSeek-V3's layout beside a full model; as a plain file beside an adapter."""
    from trainer.mtp import save_mtp_heads

    if (final / "config.json").is_file():
        save_mtp_heads(heads, final)
    else:
        _write_heads(heads, final / HEADS_IN_CHECKPOINT)
