"""A training stage's settings: defaults, then a recipe file's table, then flags; each value's source kept.

Like `katpilot config show`: the run directory's `config.toml` says, next to every value, where it
came from, so a run can be read back and repeated. A rerun into the same directory with other
settings is refused (a run is one configuration).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from katpilot.errors import KatpilotError
from trainer.rl.llama_rollouts import ROLLOUTS
from trainer.rl.objective import LOSS_TYPES, SCALES

SOURCE_DEFAULT = "default"
SOURCE_FLAG = "flag"
PRECISIONS = ("auto", "bf16", "fp32")  # trainer/precision.py resolves them


@dataclass(frozen=True)
class SFTConfig:
    """Cold-start SFT (and the knobs later stages share). Defaults are what a laptop run wants."""

    model: str = ""  # a checkpoint directory, a GGUF, or a model name
    data: str = ""  # a dataset directory (records.jsonl) or a JSONL file with `messages`
    method: str = "lora"  # "lora" or "full"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"  # peft's target_modules: "all-linear" or comma-separated names
    learning_rate: float = 0.0  # 0: 2e-4 for LoRA, 5e-5 for full fine-tuning
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024  # tokens per record; longer records are skipped (counted)
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    save_steps: int = 50
    save_total_limit: int = 2
    gradient_checkpointing: bool = False
    system_prompt: str = "You are katpilot, a concise and careful coding assistant."  # what serving sends
    merge: bool = False  # LoRA: also write the merged model to final/
    logging_steps: int = 1
    group_by_length: bool = False  # batches of similar lengths (less padding), shuffled between groups
    padding_free: bool = True  # a batch's records share rows instead of padding (same loss; trainer/packing.py)
    tensorboard: bool = False  # also log to TensorBoard (needs `pip install tensorboard`), under tensorboard/
    forced_share: float = 0.0  # SFT: this share of AutoThink records also trained from the mode tag on (as forced)
    precision: str = "auto"  # auto: bf16 autocast where the hardware has native bf16, else fp32; bf16; fp32

    def __post_init__(self) -> None:
        problems = []
        if self.method not in ("lora", "full"):
            problems.append(f"method must be lora or full, not {self.method!r}")
        for name in (
            "lora_rank",
            "lora_alpha",
            "batch_size",
            "grad_accum",
            "max_length",
            "save_steps",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if not 0 <= self.forced_share <= 1:
            problems.append("forced_share must be within [0, 1]")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        for name, value, rule, holds in (
            ("learning_rate", self.learning_rate, ">= 0", self.learning_rate >= 0),
            ("epochs", self.epochs, "> 0", self.epochs > 0),
            ("lora_dropout", self.lora_dropout, "within [0, 1)", 0 <= self.lora_dropout < 1),
            ("warmup_ratio", self.warmup_ratio, "within [0, 1]", 0 <= self.warmup_ratio <= 1),
            ("weight_decay", self.weight_decay, ">= 0", self.weight_decay >= 0),
        ):
            if not holds:
                problems.append(f"{name} must be {rule}, not {value!r}")
        if problems:
            raise KatpilotError("; ".join(problems), "fix the recipe or the flags")

    DEFAULT_LR: ClassVar[dict[str, float]] = {"lora": 2e-4, "full": 5e-5}  # when learning_rate is 0

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate > 0 else self.DEFAULT_LR[self.method]


DIVERGENCES = ("uld", "kl", "jsd")


@dataclass(frozen=True)
class DistillConfig(SFTConfig):
    """Distillation: SFT's knobs plus the teacher, ULD, MTP and the repository's text with FIM.

    `data` may be empty when `repo` is given (the repository's text alone), and `teacher` may be
    empty (next-token + MTP on the team's code, no teacher)."""

    teacher: str = ""  # a GGUF or model name (llama.cpp, cached), or a Hugging Face directory
    teacher_mode: str = "cache"  # "cache": top-k written once to teacher/, "live": in-process (HF only)
    teacher_topk: int = 64  # log-probabilities kept per position in the cache
    divergence: str = "uld"  # "uld" (any tokenizers), "kl" or "jsd" (same tokenizer, live teacher)
    uld_weight: float = 1.5  # lambda in CE + lambda * ULD (the ULD authors' default)
    student_temperature: float = 1.0
    teacher_temperature: float = 1.0
    mtp_depth: int = 1  # MTP modules (0: none)
    mtp_weight: float = 0.0  # 0: DeepSeek-V3's schedule (0.3, then 0.1); else a constant lambda
    repo: str = ""  # a repository whose indexed text (secrets withheld) is trained on too
    repo_chunk_tokens: int = 256  # the text is cut into windows of this many student tokens
    repo_max_chunks: int = 0  # 0: every window; else a seeded sample of this many
    fim_rate: float = 0.5  # share of repository windows turned into fill-in-the-middle examples

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.teacher_mode not in ("cache", "live"):
            problems.append(f"teacher_mode must be cache or live, not {self.teacher_mode!r}")
        if self.divergence not in DIVERGENCES:
            problems.append(f"divergence must be one of {', '.join(DIVERGENCES)}, not {self.divergence!r}")
        if self.divergence != "uld" and self.teacher_mode != "live":
            problems.append("divergence kl or jsd needs teacher_mode = live (a cache holds no token ids)")
        if self.teacher_topk < 1 or self.repo_chunk_tokens < 16 or self.mtp_depth < 0 or self.repo_max_chunks < 0:
            problems.append("teacher_topk >= 1, repo_chunk_tokens >= 16, mtp_depth >= 0 and repo_max_chunks >= 0")
        if not 0 <= self.fim_rate <= 1 or self.uld_weight < 0 or self.mtp_weight < 0:
            problems.append("fim_rate within [0, 1], uld_weight and mtp_weight at least 0")
        if self.student_temperature <= 0 or self.teacher_temperature <= 0:
            problems.append("temperatures must be above 0")
        if problems:
            raise KatpilotError("; ".join(problems), "fix the recipe or the flags")


@dataclass(frozen=True)
class RLConfig(SFTConfig):
    """Step-SRPO. `data`: a `katpilot train data` dataset or an eval suite (`arithmetic`, a JSONL file);
    `batch_size`: prompts per step, each answered `generations` times."""

    batch_size: int = 4
    epochs: float = 1.0
    max_length: int = 512  # prompt tokens; longer prompts are skipped (counted)
    generations: int = 4  # G, rollouts per prompt
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    loss_type: str = "dapo"  # grpo, bnpo, dr_grpo or dapo, with TRL's meaning
    epsilon: float = 0.2
    epsilon_high: float = 0.0  # 0: epsilon (DAPO's clip-higher: 0.28)
    beta: float = 0.0  # KL to the reference (the base with adapters off under LoRA)
    scale_rewards: str = "group"  # advantages over the group's std, the batch's, or none
    format_weight: float = 0.2
    judge_reward: bool = True  # off: every token gets the answer advantage (plain GRPO)
    judge_margin: float = 0.1  # think-off is right unless think-on passes this much more often
    label_weight: float = 0.5  # judge reward for agreeing with the dataset's mode label
    mode_weight: float = 1.0  # the decoupled mode-tag loss coefficient; 0: not decoupled
    rollouts: str = "auto"  # transformers, llama.cpp (LoRA on CPU; the adapter exported each step) or auto
    rollout_jobs: int = 1  # llama.cpp rollouts at once: engines sharing the threads (as `katpilot eval --jobs`)
    # On, as in TRL's GRPOConfig: a step's batch is batch_size x generations whole completions, whose
    # activations dominate memory (the tiny recipe's RL stage alone: peak RSS 9.9 -> 5.1 GB, 10% slower)
    gradient_checkpointing: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.loss_type not in LOSS_TYPES:
            problems.append(f"loss_type must be one of {', '.join(LOSS_TYPES)}, not {self.loss_type!r}")
        if self.scale_rewards not in SCALES:
            problems.append(f"scale_rewards must be one of {', '.join(SCALES)}, not {self.scale_rewards!r}")
        if self.generations < 2:
            problems.append("generations must be at least 2 (advantages compare rollouts of one prompt)")
        if self.max_new_tokens < 1 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            problems.append("max_new_tokens >= 1, temperature > 0 and top_p within (0, 1]")
        if min(self.epsilon, self.epsilon_high, self.beta, self.format_weight, self.label_weight, self.mode_weight) < 0:
            problems.append("epsilon, epsilon_high, beta, format_weight, label_weight and mode_weight must be >= 0")
        if self.rollouts not in ROLLOUTS:
            problems.append(f"rollouts must be one of {', '.join(ROLLOUTS)}, not {self.rollouts!r}")
        if self.rollout_jobs < 1:
            problems.append("rollout_jobs must be at least 1")
        if not 0 <= self.judge_margin <= 1:
            problems.append("judge_margin must be within [0, 1]")
        if problems:
            raise KatpilotError("; ".join(problems), "fix the recipe or the flags")

    DEFAULT_LR: ClassVar[dict[str, float]] = {"lora": 1e-5, "full": 1e-6}


@dataclass(frozen=True)
class Resolved:
    config: SFTConfig
    sources: dict[str, str] = field(default_factory=dict)


def resolve(recipe: Path | None, table: str, flags: dict[str, Any], schema: type[SFTConfig] = SFTConfig) -> Resolved:
    """Defaults < the recipe's `[table]` < flags (None = not given), into `schema`'s settings."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {f.name: SOURCE_DEFAULT for f in fields(schema)}
    known = {f.name: f for f in fields(schema)}
    if recipe is not None:
        try:
            data = tomllib.loads(recipe.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise KatpilotError(f"cannot read the recipe {recipe} ({exc})", "give a TOML file (UTF-8)") from None
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise KatpilotError(f"{recipe}: [{table}] must be a table", "write it as [sft] with key = value lines")
        for key, value in section.items():
            if key not in known:
                raise KatpilotError(f"{recipe}: [{table}] has an unknown key {key!r}", f"known: {', '.join(known)}")
            values[key] = value
            sources[key] = f"{recipe}"
    for key, value in flags.items():
        if key not in known:
            raise KatpilotError(f"[{table}] has an unknown key {key!r}", f"known: {', '.join(known)}")
        if value is not None:
            values[key] = value
            sources[key] = SOURCE_FLAG
    for key, value in values.items():
        want = type(getattr(schema(), key))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif not isinstance(values[key], want) or (want is int and isinstance(value, bool)):
            raise KatpilotError(
                f"[{table}] {key} must be a {want.__name__}, not {value!r}", "fix the recipe or the flag"
            )
        if want is float and not math.isfinite(values[key]):
            raise KatpilotError(f"[{table}] {key} must be a finite number, not {value!r}", "fix the recipe or the flag")
    return Resolved(schema(**values), sources)


def to_toml(resolved: Resolved, table: str) -> str:
    """The run's config.toml: every value, with where it came from."""
    lines = [f"# resolved settings of this run; each value's source after it\n[{table}]"]
    for f in fields(resolved.config):
        value = getattr(resolved.config, f.name)
        lines.append(f"{f.name} = {_toml_value(value)}  # {resolved.sources.get(f.name, SOURCE_DEFAULT)}")
    return "\n".join(lines) + "\n"


def read_toml(path: Path, table: str) -> dict[str, Any]:
    section = tomllib.loads(path.read_text(encoding="utf-8")).get(table, {})
    return section if isinstance(section, dict) else {}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'
