"""The `katpilot` command as a user runs it: real subprocesses on the real embedded model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KATPILOT = [sys.executable, "-m", "katpilot"]


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KATPILOT, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_ask_json_think_off() -> None:
    result = run("ask", "--json", "--think", "off", "What is 2+2?")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"].strip()
    assert data["mode"] == "off" and data["decided_by"] == "user"
    assert set(data) >= {"answer", "think", "judge", "mode", "decided_by", "p_on", "stats"}
    assert data["stats"]["completion_tokens"] > 0


def test_ask_streams_answer_to_stdout_and_thinking_to_stderr() -> None:
    result = run(
        "ask",
        "--think",
        "on",
        "--show-thinking",
        "--temperature",
        "0",
        "--max-tokens",
        "30",
        "--budget",
        "10",
        "Why is the sky blue?",
    )
    assert result.returncode == 0, result.stderr
    assert "[think]" in result.stderr and "think on (user)" in result.stderr
    assert "[think]" not in result.stdout and "<think>" not in result.stdout


def test_a_plain_model_is_not_said_to_decide() -> None:
    """The embedded model is plain: the footer and --json say nobody decided, not "model"."""
    shown = run("ask", "--show-thinking", "--temperature", "0", "--max-tokens", "8", "What is 2+2?")
    assert shown.returncode == 0, shown.stderr
    assert "think off (no decision: plain model)" in shown.stderr and "(model" not in shown.stderr
    assert "[think off (no decision: plain model)]" in shown.stderr  # the --show-thinking line
    data = json.loads(run("ask", "--json", "--temperature", "0", "--max-tokens", "8", "What is 2+2?").stdout)
    assert (data["mode"], data["decided_by"], data["p_on"]) == ("off", "none", None)


def test_a_judge_cut_short_is_not_a_decision() -> None:
    result = run("ask", "--profile", "kat", "--temperature", "0", "--max-tokens", "3", "Is 17 prime?")
    assert result.returncode == 0, result.stderr
    assert "think off (no decision: it ended before the decision point)" in result.stderr
    assert "stopped: length" in result.stderr


@pytest.mark.parametrize(
    ("resume", "needle"),
    [("last", "there is no chat to resume yet"), ("7", "there is no chat 7"), ("latest", "takes a chat ID or 'last'")],
)
def test_chat_resume_is_checked_before_the_chat_starts(resume: str, needle: str) -> None:
    assert_one_line_error(run("chat", "--resume", resume), needle)


def test_stdin_is_added_as_context() -> None:
    bare = json.loads(run("ask", "--json", "--think", "off", "--max-tokens", "5", "explain").stdout)
    piped = json.loads(
        run(
            "ask",
            "--json",
            "--think",
            "off",
            "--max-tokens",
            "5",
            "explain",
            stdin="def add(a, b):\n    return a + b\n",
        ).stdout
    )
    assert piped["stats"]["prompt_tokens"] > bare["stats"]["prompt_tokens"] + 10


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "not a GGUF"),
        (b"hello, I am a text file\n" * 10, "not a GGUF"),
        (b"GGUF\x03\x00\x00\x00", "truncated"),
    ],
)
def test_bad_model_files_give_one_line_and_exit_2(tmp_path: Path, content: bytes, needle: str) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    assert_one_line_error(run("ask", "--model", str(bad), "hi"), str(bad))


def test_truncated_real_model_is_refused(tmp_path: Path, model_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with open(model_path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(model_path.stat().st_size // 2))
    result = run("ask", "--model", str(cut), "hi")
    assert_one_line_error(result, str(cut), "truncated")


def test_missing_model_file(tmp_path: Path) -> None:
    assert_one_line_error(run("ask", "--model", str(tmp_path / "nope.gguf"), "hi"), "nope.gguf")


def test_bad_config_names_file_and_key(katpilot_home: Path) -> None:
    config = katpilot_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('think = "sometimes"\n')
    assert_one_line_error(run("ask", "hi"), str(config), "think")
    config.write_text("n_ctx = [\n")
    assert_one_line_error(run("config", "show"), str(config))


def test_config_show_reports_sources(katpilot_home: Path) -> None:
    config = katpilot_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("n_ctx = 2048\n")
    result = run("config", "show", env={"KATPILOT_THINK": "off"})
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "config file" in lines["n_ctx"] and "2048" in lines["n_ctx"]
    assert "env KATPILOT_THINK" in lines["think"]
    assert "default" in lines["temperature"]


def test_models_list_and_info(model_path: Path) -> None:
    listing = run("models")
    assert listing.returncode == 0 and "smollm2-135m" in listing.stdout and "embedded" in listing.stdout
    info = run("models", "info", str(model_path), "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["architecture"] == "llama" and data["quantization"] == "Q4_1"
    assert data["profile"] == "plain" and data["mtp_heads"] == 0 and data["context_length"] == 8192
    assert 130e6 < data["parameters"] < 140e6
    text = run("models", "info", str(model_path))
    assert "architecture     llama" in text.stdout and "<|im_start|>" in text.stdout


def test_models_alias_from_config(katpilot_home: Path, model_path: Path, tmp_path: Path) -> None:
    alias_target = tmp_path / "copy.gguf"
    shutil.copy(model_path, alias_target)
    config = katpilot_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[models]\nsmall = "{alias_target}"\n')
    assert "small" in run("models").stdout
    result = run("ask", "--model", "small", "--json", "--think", "off", "--max-tokens", "5", "hi")
    assert result.returncode == 0, result.stderr
    config.write_text(f'[models]\nsmall = "{alias_target}"\nfolder = "{tmp_path}"\ngone = "{tmp_path / "no.gguf"}"\n')
    rows = {row["name"]: row for row in json.loads(run("models", "--json").stdout)}
    assert rows["folder"]["problem"] == "unusable" and "is a directory, not a GGUF file" in rows["folder"]["reason"]
    assert rows["gone"]["problem"] == "missing" and "No such file" in rows["gone"]["reason"]
    assert rows["small"]["reason"] is None
    said = run("models", "--verbose").stderr
    assert f"models.folder: {tmp_path} is a directory" in said and "models.gone:" in said


def test_non_utf8_stdin_still_reaches_the_model() -> None:
    result = subprocess.run(
        [*KATPILOT, "ask", "--json", "--think", "off", "--max-tokens", "3", "explain"],
        input=b"caf\xe9 = 1\n" * 20,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert b"not valid UTF-8" in result.stderr
    assert json.loads(result.stdout)["stats"]["prompt_tokens"] > 60


def test_serving_path_loads_no_training_stack(model_path: Path) -> None:
    """Run a real `ask` in-process and check that nothing heavy was imported on the way."""
    code = (
        "import sys\n"
        "from katpilot.cli import app\n"
        "try:\n"
        f"    app(['ask', '--think', 'off', '--max-tokens', '3', '--model', {str(model_path)!r}, 'hi'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'llama_cpp' in sys.modules, 'the ask did not run'\n"
        "import lsp.server, katpilot.server.app, katpilot.chat.app  # the other front ends\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'accelerate') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
