"""Cold-start SFT speed and memory: ours (`katpilot train sft`) against TRL's `SFTTrainer`, same run.

    pip install trl      # only for this comparison
    python bench/train.py [--steps 8] [--batch 4] [--records 64] [--method full] [--precision auto]

Targets (issue 18): training tokens/s of ours / TRL's >= 1.0, and peak memory <= 1.0x TRL's. Both
train the embedded SmolLM2-135M (from its GGUF, AutoThink tags added) on the same programmatic
AutoThink records, same batch, learning rate, sequence limit and seed, loss on the answer only (TRL:
prompt-completion records, `completion_only_loss`), same precision (`--precision`, resolved for
this machine as the trainer resolves it: bf16 autocast where the CPU has bf16 instructions, else
fp32; TRL's own default would be bf16 anywhere). Each runs in its own process (peak RSS is that
process's), one after the other; seconds per step are timed by the same callback in both, first
step excluded (warm-up), and tokens/s = the records' mean tokens x batch / seconds per step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as `python bench/train.py`, bench/ comes first on sys.path and its quant.py would hide the
# quant package the trainer imports: the repository root goes first instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from katpilot import config as config_mod  # noqa: E402
from katpilot.models import embedded_model_path  # noqa: E402
from trainer.config import PRECISIONS  # noqa: E402
from trainer.data.command import DataRun, run_data  # noqa: E402
from trainer.precision import bf16_here  # noqa: E402


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._start)

    return StepTimer()


def run_ours(data: Path, out: Path, steps: int, batch: int, method: str, precision: str) -> list[float]:
    from trainer.config import resolve
    from trainer.sft import run_sft

    timer = step_timer()
    flags = {"model": str(embedded_model_path()), "data": str(data), "method": method, "max_steps": steps}
    flags |= {"batch_size": batch, "learning_rate": 5e-5, "save_steps": 10_000, "max_length": 1024}
    flags |= {"precision": precision}
    run_sft(resolve(None, "sft", flags), out, callbacks=[timer])
    return timer.times


def run_trl(data: Path, out: Path, steps: int, batch: int, method: str, precision: str) -> list[float]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from trainer.chat_data import load_chats
    from trainer.config import SFTConfig as Ours
    from trainer.model_io import add_autothink_tokens, load_student

    model, tokenizer = load_student(embedded_model_path())
    added = add_autothink_tokens(model, tokenizer)
    system = {"role": "system", "content": Ours().system_prompt}
    rows = [{"prompt": [system, *chat[:-1]], "completion": chat[-1:]} for chat in load_chats(data)]
    args = SFTConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=5e-5 if method == "full" else 2e-4,
        max_length=1024,
        completion_only_loss=True,
        packing=False,
        seed=0,
        save_steps=10_000,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        bf16=bf16_here(precision),  # TRL's default is bf16 wherever; ours follows the hardware
        gradient_checkpointing=False,  # TRL's default is on; ours trains without it
    )
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules="all-linear",
        trainable_token_indices=added,
        task_type="CAUSAL_LM",
    )
    timer = step_timer()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora if method == "lora" else None,
        callbacks=[timer],
    )
    trainer.train()
    return timer.times


def child(which: str, data: Path, out: Path, steps: int, batch: int, method: str, precision: str) -> None:
    times = (run_ours if which == "ours" else run_trl)(data, out, steps, batch, method, precision)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps({"times": times, "peak": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--method", choices=("full", "lora"), default="full")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--child", choices=("ours", "trl"))
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.out, args.steps, args.batch, args.method, args.precision)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        settings = config_mod.load_settings().settings
        run_data(settings, DataRun(out=data, kinds=("arithmetic",), teacher="programmatic", limit=args.records))
        from trainer.chat_data import load_chats

        results = {}
        for which in ("ours", "trl"):
            cmd = [sys.executable, __file__, "--child", which, "--data", str(data), "--out", str(Path(tmp) / which)]
            cmd += ["--steps", str(args.steps), "--batch", str(args.batch), "--method", args.method]
            cmd += ["--precision", args.precision]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
            results[which] = json.loads(line[len("RESULT ") :])
        chats = load_chats(data)
        mean_chars = statistics.mean(sum(len(m["content"]) for m in c) for c in chats)
    per_step = {k: statistics.mean(v["times"][1:]) for k, v in results.items()}
    kind = "bf16 autocast" if bf16_here(args.precision) else "fp32"
    print(
        f"{args.records} records (~{mean_chars:.0f} characters each), batch {args.batch}, {args.steps} steps, "
        f"{args.method}, {kind} on both sides"
    )
    for which in ("ours", "trl"):
        print(f"{which:<5} {per_step[which]:6.2f} s/step   peak RSS {results[which]['peak'] / 2**30:5.2f} GiB")
    print(f"tokens/s, ours / TRL's: {per_step['trl'] / per_step['ours']:.2f} (target >= 1.0; same tokens per step)")
    print(f"peak memory, ours / TRL's: {results['ours']['peak'] / results['trl']['peak']:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
