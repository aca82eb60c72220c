"""Step-SRPO step speed: ours (`katpilot train rl`) against TRL's `GRPOTrainer`, same run.

    pip install trl==1.16.0      # only for this comparison (the dev extra has it)
    python bench/rl.py [--steps 5] [--prompts 2] [--generations 4] [--max-new-tokens 64] [--method lora]
                       [--precision auto] [--no-checkpointing]

Target (issue 19): seconds per completion token of TRL's step / ours >= 1.0. Both train the embedded
SmolLM2-135M (from its GGUF, AutoThink tags added) on the same arithmetic-ladder prompts with
serving's system prompt, the same prompts x generations per step, sampling temperature, generation
length, learning rate, loss (`dapo`, beta 0), seed, precision (`--precision`, resolved for this
machine as the trainer resolves it) and gradient checkpointing (on, both libraries' default;
`--no-checkpointing` turns it off on both sides); TRL's reward is our verifier on the gate's
answer segment, so both score alike. Each runs in its own process, one after the other; seconds per
step are timed by the same callback in both, the first step excluded (warm-up). Sampled completions
differ in length between the two runs, so the ratio is taken per completion token (the step's work
grows with it), and seconds per step are printed beside it. Ours is split into rollouts (sampling
and scoring) and optimisation (log-probabilities, loss, backward, optimizer step).

With `--method lora` (the default) a third run measures ours with rollouts through llama.cpp: the
base exported once as an f16 GGUF, the current adapter exported as a GGUF adapter every step (its
export and the model load are inside the rollout time). All three then start from the embedded model
with its AutoThink tags already in the checkpoint, as after cold-start SFT (llama.cpp adapters cannot
add tokens).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `python bench/rl.py` puts bench/ first on the path, where bench/quant.py would shadow the quant
# package that llama.cpp rollouts export with: the project root goes there instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from katpilot.models import embedded_model_path  # noqa: E402
from trainer.config import PRECISIONS  # noqa: E402
from trainer.precision import bf16_here  # noqa: E402


def step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.logs: list[dict[str, float]] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            self.times.append(time.perf_counter() - self._start)

        def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
            if logs:
                self.logs.append(dict(logs))

    return StepTimer()


RUNS = ("ours", "ours-llama.cpp", "trl")


def tagged_checkpoint(dest: Path) -> str:
    """The embedded model with its AutoThink tags, saved as a checkpoint (what cold-start SFT yields)."""
    code = (
        "import sys; from trainer.model_io import load_student, add_autothink_tokens; "
        f"m, t = load_student({str(embedded_model_path())!r}); add_autothink_tokens(m, t); "
        f"m.save_pretrained({str(dest)!r}); t.save_pretrained({str(dest)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
    return str(dest)


def run_ours(out: Path, a: argparse.Namespace) -> dict[str, Any]:
    from trainer import run_dir
    from trainer.config import RLConfig, resolve
    from trainer.rl.train import run_rl

    timer = step_timer()
    rollouts = "llama.cpp" if a.child == "ours-llama.cpp" else "transformers"
    flags = {"model": a.model, "data": "arithmetic", "method": a.method, "max_steps": a.steps, "rollouts": rollouts}
    flags |= {"batch_size": a.prompts, "generations": a.generations, "max_new_tokens": a.max_new_tokens}
    flags |= {"learning_rate": 1e-6, "save_steps": 10_000, "temperature": 1.0, "seed": 0}
    flags |= {"precision": a.precision, "gradient_checkpointing": a.checkpointing}
    run_rl(resolve(None, "rl", flags, schema=RLConfig), out, callbacks=[timer])
    rows = run_dir.read_metrics(out)
    rollouts = a.prompts * a.generations
    tokens = [rollouts * (r["tokens_judge"] + r["tokens_think"] + r["tokens_answer"]) for r in rows]
    return {"times": timer.times, "tokens": tokens, "rollouts_s": [r["seconds_rollouts"] for r in rows]}


def run_trl(out: Path, a: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from katpilot import gate
    from katpilot.eval.items import grade
    from trainer.config import RLConfig
    from trainer.model_io import add_autothink_tokens, load_student
    from trainer.rl.prompts import load_prompts

    model, tokenizer = load_student(a.model)
    added = add_autothink_tokens(model, tokenizer)  # none when the checkpoint has them
    prompts = load_prompts("arithmetic", 0).prompts
    items = {p.item.prompt: p.item for p in prompts}
    system = {"role": "system", "content": RLConfig().system_prompt}
    rows = [{"prompt": [system, *p.messages], "question": p.item.prompt} for p in prompts]

    def verifier(completions: list[Any], question: list[str], **kw: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [
            1.0 if grade(items[q], gate.split(t).answer).passed else 0.0 for t, q in zip(texts, question, strict=True)
        ]

    args = GRPOConfig(
        output_dir=str(out),
        max_steps=a.steps,
        per_device_train_batch_size=a.prompts * a.generations,
        num_generations=a.generations,
        max_completion_length=a.max_new_tokens,
        temperature=1.0,
        learning_rate=1e-6 if a.method == "full" else 1e-5,
        loss_type="dapo",
        beta=0.0,
        seed=0,
        save_steps=10_000,
        report_to=[],
        use_cpu=True,
        bf16=bf16_here(a.precision),
        gradient_checkpointing=a.checkpointing,
        logging_steps=1,
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, target_modules="all-linear", trainable_token_indices=added or None, task_type="CAUSAL_LM"
    )
    timer = step_timer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[verifier],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora if a.method == "lora" else None,
        callbacks=[timer],
    )
    trainer.train()
    lengths = [log["completions/mean_length"] for log in timer.logs if "completions/mean_length" in log]
    return {"times": timer.times, "tokens": [a.prompts * a.generations * n for n in lengths]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--method", choices=("full", "lora"), default="lora")
    parser.add_argument("--child", choices=RUNS)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", default=str(embedded_model_path()))
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    if args.child:
        result = (run_trl if args.child == "trl" else run_ours)(args.out, args)
        print("RESULT " + json.dumps(result))
        return
    results = {}
    runs = RUNS if args.method == "lora" else ("ours", "trl")
    with tempfile.TemporaryDirectory() as tmp:
        if args.method == "lora":
            args.model = tagged_checkpoint(Path(tmp) / "student")
        for which in runs:
            cmd = [sys.executable, __file__, "--child", which, "--out", str(Path(tmp) / which), "--model", args.model]
            cmd += ["--steps", str(args.steps), "--prompts", str(args.prompts), "--generations", str(args.generations)]
            cmd += ["--max-new-tokens", str(args.max_new_tokens), "--method", args.method]
            cmd += ["--precision", args.precision, "--checkpointing" if args.checkpointing else "--no-checkpointing"]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
            results[which] = json.loads(line[len("RESULT ") :])
    per_step = {k: statistics.mean(v["times"][1:]) for k, v in results.items()}
    per_token = {k: sum(v["times"][1:]) / sum(v["tokens"][1:]) for k, v in results.items()}
    print(
        f"{args.prompts} prompts x {args.generations} rollouts of up to {args.max_new_tokens} tokens, "
        f"{args.steps} steps ({args.steps - 1} timed), {args.method}, "
        f"{'bf16 autocast' if bf16_here(args.precision) else 'fp32'}, "
        f"gradient checkpointing {'on' if args.checkpointing else 'off'} on every side"
    )
    for which in runs:
        tokens = statistics.mean(results[which]["tokens"][1:])
        line = f"{which:<14} {per_step[which]:6.2f} s/step   {tokens:6.1f} completion tokens/step"
        if which != "trl":
            rollouts = statistics.mean(results[which]["rollouts_s"][1:])
            line += f"   rollouts {rollouts:.2f} s + optimisation {per_step[which] - rollouts:.2f} s"
        print(line)
    print(f"seconds per completion token, TRL's / ours: {per_token['trl'] / per_token['ours']:.2f} (target >= 1.0)")
    if "ours-llama.cpp" in results:
        per_rollout_token = {
            k: sum(results[k]["rollouts_s"][1:]) / sum(results[k]["tokens"][1:]) for k in ("ours", "ours-llama.cpp")
        }
        print(
            "rollout seconds per completion token, transformers' / llama.cpp's: "
            f"{per_rollout_token['ours'] / per_rollout_token['ours-llama.cpp']:.2f} (> 1: llama.cpp is faster); "
            f"whole step, ours / ours-llama.cpp: {per_token['ours'] / per_token['ours-llama.cpp']:.2f}"
        )


if __name__ == "__main__":
    main()
