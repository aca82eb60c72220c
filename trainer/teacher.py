"""The distillation teacher: live in the same process, or its top-k log-probabilities cached on disk once.

Two kinds of teacher, chosen by what `teacher` names:
- a GGUF file or a model name: katpilot's engine (llama.cpp), the one serving uses, through
  `Engine.continuation_top_logprobs`. Cache only: llama.cpp runs first, the student trains after
  without it, so a big quantized teacher never shares memory with the student's optimizer.
- a Hugging Face checkpoint directory: transformers. Cached, or live (its logits each step, which
  also allows KL / JSD when it shares the student's tokenizer).

The cache (`teacher/` in the run directory) holds, per example, the teacher's top `teacher_topk`
log-probabilities (descending, float16: ULD needs the values, never the ids) at each token of the
text the teacher reads, with a manifest naming the teacher, k, the temperature and a hash of every
text, so a rerun reuses it and any change rebuilds it. It is written once, atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from katpilot.chat_template import Message, render
from katpilot.errors import KatpilotError
from katpilot.eval.records import write_atomic
from trainer.distill_data import Example, TeacherText

CACHE_DIR = "teacher"
CACHE_FILE = "topk.safetensors"
MANIFEST = "manifest.json"


def is_transformers_teacher(spec: str) -> bool:
    return Path(spec).expanduser().is_dir()


def teacher_prompt(template: str, bos: str, eos: str, text: TeacherText) -> str:
    """The teacher's prompt: the chat in its own template (plain text without one), or the prefix."""
    if not text.messages:
        return text.prefix
    if template:
        return render(template, [Message(role, content) for role, content in text.messages], bos, eos)  # type: ignore[arg-type]
    return "".join(f"{content}\n\n" for _, content in text.messages)


class EngineTeacher:
    """A served model (llama.cpp) as teacher; cache only."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.name = engine.info.name

    def top_logprobs(self, text: TeacherText, k: int, temperature: float) -> np.ndarray:
        info = self.engine.info
        prompt = teacher_prompt(info.chat_template, info.bos_token, info.eos_token, text)
        rows = self.engine.continuation_top_logprobs(prompt, text.continuation, k, temperature)
        if rows is None:
            raise KatpilotError(
                f"the teacher {self.name} reports no top-k log-probabilities",
                "give a local GGUF or a Hugging Face checkpoint directory as the teacher",
            )
        return np.asarray(rows, dtype=np.float32)


class TransformersTeacher:
    """A Hugging Face checkpoint as teacher: cached, or live inside the student's step."""

    def __init__(self, spec: str) -> None:
        import torch

        from trainer.model_io import load_student

        self.model, self.tokenizer = load_student(spec)
        self.model.eval()
        self.model.requires_grad_(False)
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.name = spec
        self.torch = torch

    def encode(self, text: TeacherText) -> tuple[list[int], list[bool]]:
        """Token ids of prompt + continuation, and the positions predicting the continuation's tokens."""
        template = self.tokenizer.chat_template or ""
        bos = self.tokenizer.bos_token or ""
        eos = self.tokenizer.eos_token or ""
        prompt = teacher_prompt(template, bos, eos, text)
        head = self.tokenizer(prompt, add_special_tokens=not text.messages)["input_ids"] if prompt else []
        if not head and self.tokenizer.bos_token_id is not None:
            head = [self.tokenizer.bos_token_id]
        if not head:
            raise KatpilotError("an empty prompt gives the teacher nothing to predict from", "give a prompt")
        tail = self.tokenizer(text.continuation, add_special_tokens=False)["input_ids"]
        ids = head + tail
        aligned = [False] * len(ids)
        for position in range(len(head) - 1, len(ids) - 1):
            aligned[position] = True
        return ids, aligned

    def logits(self, input_ids: Any, attention_mask: Any) -> Any:
        device = self.model.device
        with self.torch.no_grad():
            return self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits

    def top_logprobs(self, text: TeacherText, k: int, temperature: float) -> np.ndarray:
        ids, aligned = self.encode(text)
        torch = self.torch
        logits = self.logits(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]
        rows = torch.log_softmax(logits[torch.tensor(aligned, device=logits.device)].float() / temperature, dim=-1)
        top: np.ndarray = rows.topk(min(k, rows.shape[-1]), dim=-1).values.cpu().numpy()
        return top


Teacher = EngineTeacher | TransformersTeacher


def cache_fingerprint(teacher: str, k: int, temperature: float, examples: list[Example]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(
            json.dumps([example.teacher.messages, example.teacher.prefix, example.teacher.continuation]).encode()
        )
    return {
        "teacher": teacher,
        "k": k,
        "temperature": temperature,
        "examples": len(examples),
        "texts": digest.hexdigest(),
    }


class TeacherCache:
    """The cached top-k rows of every example, read lazily from the safetensors file."""

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open

        self._file = safe_open(str(directory / CACHE_FILE), framework="pt")
        self.offsets = self._file.get_tensor("offsets").tolist()  # type: ignore[no-untyped-call]
        self._rows = self._file.get_slice("logprobs")  # type: ignore[no-untyped-call]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, index: int) -> Any:
        """(tokens, k) float32 log-probabilities of example `index`."""
        return self._rows[self.offsets[index] : self.offsets[index + 1]].float()


def open_cache(
    run_out: Path,
    fingerprint: dict[str, Any],
    examples: list[Example],
    make_teacher: Callable[[], Teacher],
    progress: Callable[[int, int], None] | None = None,
) -> TeacherCache:
    """The run's cache, written first when missing or made for other texts or another teacher.

    In a multi-process run the main process writes it; the others wait for it."""
    from trainer.run_dir import is_main_process

    directory = run_out / CACHE_DIR
    while True:
        if _cache_matches(directory, fingerprint):
            return TeacherCache(directory)
        if is_main_process():
            break
        time.sleep(1.0)
    write_cache(directory, fingerprint, examples, make_teacher(), progress)
    return TeacherCache(directory)


def _cache_matches(directory: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(manifest == fingerprint and (directory / CACHE_FILE).is_file())


def write_cache(
    directory: Path,
    fingerprint: dict[str, Any],
    examples: list[Example],
    teacher: Teacher,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    parts, offsets = [], [0]
    k, temperature = int(fingerprint["k"]), float(fingerprint["temperature"])
    for done, example in enumerate(examples, start=1):
        rows = teacher.top_logprobs(example.teacher, k, temperature)
        parts.append(torch.from_numpy(np.ascontiguousarray(rows)).to(torch.float16))
        offsets.append(offsets[-1] + rows.shape[0])
        if progress is not None:
            progress(done, len(examples))
    width = max((p.shape[1] for p in parts if p.numel()), default=k)
    padded = [
        torch.nn.functional.pad(p, (0, width - p.shape[1]), value=float("-inf")) if p.shape[1] < width else p
        for p in parts
    ]
    tensors = {
        "logprobs": torch.cat(padded) if padded else torch.zeros(0, width, dtype=torch.float16),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
    }
    partial = directory / f".{CACHE_FILE}.partial"
    save_file(tensors, str(partial))
    partial.replace(directory / CACHE_FILE)
    write_atomic(directory / MANIFEST, json.dumps(fingerprint, indent=1) + "\n")
