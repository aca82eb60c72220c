"""Rollouts through llama.cpp: the policy's base exported once as an f16 GGUF, its current LoRA
adapter exported as a GGUF adapter every step, both loaded by katpilot's engine (the one that serves).

Why: on CPU, llama.cpp samples one sequence at a time faster than transformers samples a batch
(bench/rl.py measures both in one run), and a LoRA adapter of a small model exports in a fraction of a
second. Only LoRA runs qualify (a full fine-tune would mean exporting the whole model every step) and
only an adapter without new token rows (llama.cpp adapters cannot add tokens: cold-start first).

The sampled ids are llama.cpp's, which are the Hugging Face tokenizer's (the exporter checks the
tokenization token for token); log-probabilities are then computed by the policy in transformers as
for any rollout. The f16 base and llama.cpp's kernels make the sampling distribution a close
approximation of the policy's, as with vLLM in TRL: the ratio in the loss is taken against the
policy's own log-probabilities.
"""

from __future__ import annotations

import importlib.util
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from katpilot.engine.base import SamplingParams, StreamStats
from trainer.chat_data import prompt_text
from trainer.rl.prompts import RLPrompt
from trainer.rl.rollouts import RolloutBatch, Sampling, assemble, tokenize_prompts

ROLLOUTS = ("auto", "transformers", "llama.cpp")  # the `rollouts` setting: which sampler


def unsuitable(model_spec: str, method: str, policy: Any) -> str | None:
    """Why llama.cpp cannot sample this policy, or None when it can."""
    import torch

    if method != "lora":
        return "it needs a LoRA run (a full fine-tune would be exported whole every step)"
    path = Path(model_spec)
    if not (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return "it needs --model to be a Hugging Face checkpoint directory (the base the adapter is exported over)"
    if any(getattr(c, "trainable_token_indices", None) for c in getattr(policy, "peft_config", {}).values()):
        return (
            "the policy gains token rows (AutoThink tags added): llama.cpp adapters cannot add tokens; cold-start first"
        )
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    if torch.cuda.is_available():
        return "on a GPU transformers samples a batch faster"
    return None


class LlamaCppSampler:
    """Samples a step's rollouts with the policy's current adapter; files live in `workdir`."""

    def __init__(self, base_checkpoint: Path, workdir: Path, n_ctx: int, jobs: int = 1) -> None:
        """`jobs`: engines sampling at once, each with its share of the threads (one stream of a small
        model leaves cores idle: two 1-thread engines sample 1.3-1.5x the tokens of one on 2 cores)."""
        from quant.export import export_checkpoint

        self.base_checkpoint = base_checkpoint
        self.workdir = workdir
        self.n_ctx = n_ctx
        self.jobs = jobs
        workdir.mkdir(parents=True, exist_ok=True)
        self.base_gguf = workdir / "base-f16.gguf"
        if not self.base_gguf.is_file():  # written whole or not at all: a resumed run reuses it
            export_checkpoint(base_checkpoint, self.base_gguf, "f16")

    def generate(
        self, policy: Any, tokenizer: Any, prompts: Sequence[RLPrompt], system_prompt: str, sampling: Sampling
    ) -> RolloutBatch:
        import torch

        from katpilot.engine.local import LocalEngine, threads_each
        from quant.lora import export_adapter

        adapter_dir, adapter_gguf = self.workdir / "adapter", self.workdir / "adapter.gguf"
        policy.save_pretrained(str(adapter_dir))
        export_adapter(adapter_dir, self.base_checkpoint, adapter_gguf, "f32")
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # from torch's RNG: a resumed run draws the same
        texts = [prompt_text(tokenizer, prompt.messages, system_prompt) for prompt in prompts]
        # Row r answers prompt r // G with seed + r, whichever engine samples it: the same rows as one engine.
        work = [(texts[r // sampling.group_size], seed + r) for r in range(len(prompts) * sampling.group_size)]
        threads = threads_each(self.jobs)
        engines: queue.Queue[Any] = queue.Queue()
        opened = []
        try:
            for _ in range(min(self.jobs, len(work))):
                opened.append(LocalEngine(self.base_gguf, n_ctx=self.n_ctx, n_threads=threads, lora_path=adapter_gguf))
                engines.put(opened[-1])

            def sample(job: tuple[str, int]) -> tuple[list[int], bool]:
                engine = engines.get()
                try:
                    return _sample_one(engine, *job, sampling)
                finally:
                    engines.put(engine)

            with ThreadPoolExecutor(max_workers=max(1, len(opened)), thread_name_prefix="katpilot-rollout") as pool:
                sampled = list(pool.map(sample, work))
        finally:
            for engine in opened:
                engine.close()
        rows = [row for row, _ in sampled]
        ended = [stop for _, stop in sampled]
        prompt_ids, prompt_mask = tokenize_prompts(tokenizer, prompts, system_prompt, sampling.group_size)
        device = next(policy.parameters()).device
        return assemble(tokenizer, prompt_ids.to(device), prompt_mask.to(device), rows, ended, sampling.group_size)


def _sample_one(engine: Any, text: str, seed: int, sampling: Sampling) -> tuple[list[int], bool]:
    """One completion's token ids (with the end token when it stopped there) and whether it stopped."""
    params = SamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=0,
        min_p=0.0,
        repeat_penalty=1.0,
        seed=seed,
        max_tokens=sampling.max_new_tokens,
    )
    stats = StreamStats()
    for _piece in engine.stream(text, params, stats=stats):
        pass
    stop = stats.finish_reason == "stop" and stats.end_token is not None
    return stats.token_ids + ([stats.end_token] if stop else []), stop  # type: ignore[list-item]
