"""Run by `torchrun --nproc_per_node 2` in test_train_ddp.py: a few distillation steps (full fine-tuning
with MTP heads, no teacher) in each process, then each process writes a hash of its parameters."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainer.config import DistillConfig, resolve
from trainer.distill import run_distill


class ParameterHash(TrainerCallback):  # type: ignore[misc]
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        digest = hashlib.sha256()
        names = []
        heads = kwargs["optimizer"].param_groups[-1]["params"]  # the MTP heads' group
        named = [*model.named_parameters(), *((f"mtp_heads.{i}", p) for i, p in enumerate(heads))]
        for name, param in sorted(named, key=lambda item: item[0]):
            names.append(name)
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        heads = sum(n.startswith("mtp_heads.") for n in names)
        rank = os.environ["RANK"]
        (self.out / f"rank-{rank}.txt").write_text(f"{digest.hexdigest()} {len(names)} {heads} {state.global_step}\n")


def main() -> None:
    out, model, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    flags = {"model": model, "data": data, "method": "full", "max_steps": 3, "batch_size": 2}
    flags |= {"learning_rate": 1e-3, "save_steps": 1000, "mtp_depth": 1}
    hashes = out / "hashes"
    hashes.mkdir(parents=True, exist_ok=True)
    run_distill(resolve(None, "distill", flags, schema=DistillConfig), out / "run", callbacks=[ParameterHash(hashes)])


if __name__ == "__main__":
    main()
