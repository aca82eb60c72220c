"""A 2-process CPU run (gloo, started by `torchrun`, as ../shared/FACTS.md measured) ends with the same
parameters in both processes, MTP heads included, and one run directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from quant_helpers import tiny_checkpoint

from katpilot import config as config_mod
from trainer.data.command import DataRun, run_data

HERE = Path(__file__).parent


def test_two_processes_end_with_equal_parameters(smol_checkpoint: Path, tmp_path: Path) -> None:
    tiny = tiny_checkpoint("llama", smol_checkpoint, tmp_path / "tiny")
    data = tmp_path / "data"
    run_data(config_mod.load_settings().settings, DataRun(out=data, kinds=("arithmetic",), limit=16))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torch installs torchrun beside the interpreter"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(HERE / "ddp_run.py"),
            str(tmp_path),
            str(tiny),
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    lines = [(tmp_path / "hashes" / f"rank-{r}.txt").read_text().split() for r in (0, 1)]
    _, _, heads, steps = lines[0]
    assert lines[1] == lines[0], lines  # the same parameters, counted the same way, after the same steps
    assert int(heads) > 0 and int(steps) == 3
    run = tmp_path / "run"
    assert (run / "final" / "mtp.safetensors").is_file() and (run / "report.md").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # one process logged


@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_the_shipped_accelerate_configs_are_ones_accelerate_launch_takes(name: str) -> None:
    """Every key of configs/accelerate/*.yaml is one `accelerate launch` knows (a typo would be ignored there)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    path = HERE.parent / "configs" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert (
        getattr(config.distributed_type, "value", config.distributed_type) == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}[name]
    )
    args = []
    for key, value in (config.fsdp_config or {}).items():
        args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    parsed = launch_command_parser().parse_args([*args, "--num_processes", str(config.num_processes), "train.py"])
    for key, value in (config.fsdp_config or {}).items():
        assert str(getattr(parsed, key)).lower() == str(value).lower(), key
