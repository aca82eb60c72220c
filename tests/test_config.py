"""katpilot.config: layering (defaults < file < env < flags), sources, validation, `config show`."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path

import pytest

from katpilot import config, paths, profiles
from katpilot.config import ResolvedConfig, Settings, describe, load_settings, render_show
from katpilot.errors import ConfigError
from katpilot.terms import PROFILE_CHOICES


def write(tmp_path: Path, text: str | bytes, name: str = "config.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, environ: dict[str, str] | None = None, flags: dict | None = None) -> ResolvedConfig:
    return load_settings(flags, config_path=path, environ=environ or {})


def error(path: Path, environ: dict[str, str] | None = None, flags: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, environ, flags)
    line = info.value.one_line()
    assert "\n" not in info.value.message and "\n" not in info.value.fix
    return line


# --- layering and sources -------------------------------------------------------------------------


def test_defaults_when_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    resolved = load(path)
    assert resolved.settings == Settings()
    assert resolved.config_path == path
    assert set(resolved.sources) == {f.name for f in dataclasses.fields(Settings)}
    assert set(resolved.sources.values()) == {"default"}
    s = resolved.settings
    assert (s.model, s.profile, s.think, s.budget, s.threshold) == (None, "auto", "auto", None, 0.5)
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.repeat_penalty, s.seed) == (
        0.7,
        0.95,
        40,
        0.05,
        1.1,
        None,
    )
    assert (s.max_tokens, s.n_ctx, s.n_threads, s.models) == (1024, 4096, None, {})
    assert s.system_prompt.startswith("You are katpilot")


def test_each_layer_overrides_the_one_below_and_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "n_ctx = 2048\nseed = 7\ntemperature = 1\nthink = 'off'\ntop_k = 10\n")
    env = {"KATPILOT_N_CTX": "1024", "KATPILOT_SEED": "none", "KATPILOT_THINK": "on"}
    flags = {"n_ctx": 512, "think": None, "temperature": None, "max_tokens": 64}
    resolved = load(path, env, flags)
    s, src = resolved.settings, resolved.sources
    where = f"config file {path}"
    assert (s.top_k, src["top_k"]) == (10, where)  # file only
    assert (s.temperature, src["temperature"]) == (1.0, where)  # int accepted for a float
    assert isinstance(s.temperature, float)
    assert (s.seed, src["seed"]) == (None, "env KATPILOT_SEED")  # env beats file, "none" -> None
    assert (s.think, src["think"]) == ("on", "env KATPILOT_THINK")  # flag None = not given
    assert (s.n_ctx, src["n_ctx"]) == (512, "flag --n-ctx")  # flag beats env and file
    assert (s.max_tokens, src["max_tokens"]) == (64, "flag --max-tokens")
    assert (s.budget, src["budget"]) == (None, "default")


def test_env_parsing_and_unrelated_katpilot_vars_ignored(tmp_path: Path) -> None:
    env = {
        "KATPILOT_HOME": "/somewhere",
        "KATPILOT_SOMETHING_ELSE": "x",
        "KATPILOT_MODELS": "ignored",
        "KATPILOT_MODEL": "",
        "KATPILOT_BUDGET": " 256 ",
        "KATPILOT_THRESHOLD": "1e-1",
        "KATPILOT_PROFILE": "KAT",
        "KATPILOT_SYSTEM_PROMPT": " Be brief. ",
        "katpilot_n_ctx": "not a setting var (lower case)",
    }
    resolved = load(tmp_path / "absent.toml", env)
    s = resolved.settings
    assert (s.model, s.budget, s.threshold, s.profile) == (None, 256, 0.1, "kat")
    assert s.system_prompt == " Be brief. "
    assert s.models == {}
    assert resolved.sources["model"] == "env KATPILOT_MODEL"
    assert resolved.sources["models"] == "default"


def test_models_table_and_model_alias(tmp_path: Path) -> None:
    path = write(tmp_path, 'model = "fast"\n\n[models]\nfast = "/m/fast.gguf"\n"big one" = "~/m/big.gguf"\n')
    resolved = load(path, {"KATPILOT_MODEL": "big one"})
    assert resolved.settings.models == {"fast": "/m/fast.gguf", "big one": "~/m/big.gguf"}
    assert resolved.sources["models"] == f"config file {path}"
    assert resolved.settings.model == "big one"


def test_flags_accept_enums_and_strings_from_the_cli(tmp_path: Path) -> None:
    class Think(str, Enum):
        on = "on"

    flags = {"think": Think.on, "seed": "none", "n_threads": "4", "top_p": 1}
    s = load(tmp_path / "absent.toml", {"KATPILOT_SEED": "3"}, flags).settings
    assert (s.think, s.seed, s.n_threads, s.top_p) == ("on", None, 4, 1.0)


def test_default_config_path_is_paths_config_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KATPILOT_HOME", str(tmp_path))
    expected = tmp_path / "config" / "config.toml"
    assert paths.config_file() == expected
    expected.parent.mkdir()
    expected.write_text("top_k = 5\n", encoding="utf-8")
    resolved = load_settings(environ={})
    assert resolved.config_path == expected
    assert (resolved.settings.top_k, resolved.sources["top_k"]) == (5, f"config file {expected}")


def test_settings_is_frozen_and_every_field_is_described() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().n_ctx = 1  # type: ignore[misc]
    for f in dataclasses.fields(Settings):
        text = describe(f.name)
        assert text and "\n" not in text and text == f.metadata["description"]
    with pytest.raises(ConfigError, match="temperature"):
        describe("temprature")


def test_profile_choices_name_every_profile_and_auto() -> None:
    # terms.PROFILE_CHOICES spells the setting's words; profiles.PROFILES holds the families.
    assert ("auto", *profiles.PROFILES) == PROFILE_CHOICES


# --- bad input ------------------------------------------------------------------------------------


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "temprature = 0.2\n[modles]\n")
    line = error(path)
    assert str(path) in line
    assert "'temprature'" in line and "did you mean 'temperature'" in line
    assert "'modles'" in line and "did you mean 'models'" in line
    assert "; " in line  # both listed, one line


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ("n_ctx = true", "n_ctx", "integer, got boolean"),  # bool is not an int
        ("n_ctx = 4096.0", "n_ctx", "integer, got float"),
        ("temperature = 'hot'", "temperature", "number, got string"),
        ("model = 3", "model", "string, got integer"),
        ("think = true", "think", "string, got boolean"),
        ("models = 'x'", "models", "table, got string"),
        ("[models]\nfast = 1", "fast", "got integer"),
        ("seed = [1]", "seed", "integer, got array"),
    ],
)
def test_wrong_type(tmp_path: Path, toml: str, key: str, expected: str) -> None:
    path = write(tmp_path, toml + "\n")
    line = error(path)
    assert str(path) in line and repr(key) in line and expected in line
    assert f"fix: edit {path}" in line


@pytest.mark.parametrize(
    ("toml", "key", "bound"),
    [
        ("n_ctx = 100", "n_ctx", ">= 256"),
        ("budget = 0", "budget", ">= 1"),
        ("threshold = 1.5", "threshold", "in [0, 1]"),
        ("top_p = 0", "top_p", "in (0, 1]"),
        ("min_p = -0.1", "min_p", "in [0, 1]"),
        ("repeat_penalty = 0", "repeat_penalty", "> 0"),
        ("temperature = -1", "temperature", ">= 0"),
        ("top_k = -1", "top_k", ">= 0"),
        ("max_tokens = 0", "max_tokens", ">= 1"),
        ("n_threads = 0", "n_threads", ">= 1"),
        ("temperature = inf", "temperature", "finite"),
    ],
)
def test_out_of_range(tmp_path: Path, toml: str, key: str, bound: str) -> None:
    path = write(tmp_path, toml + "\n")
    line = error(path)
    assert str(path) in line and repr(key) in line and bound in line


def test_invalid_choice_lists_choices(tmp_path: Path) -> None:
    path = write(tmp_path, 'think = "maybe"\nprofile = "llama"\n')
    line = error(path)
    assert str(path) in line and "'think'" in line and "'profile'" in line
    assert "'auto', 'on', 'off'" in line and "'auto', 'kat', 'think', 'plain'" in line


def test_toml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "top_k = 3\nn_ctx = \n")
    line = error(path)
    assert str(path) in line and "line 2" in line and "column" in line
    assert f"fix: edit or delete {path}" in line


def test_non_utf8_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"model = '\xff\xfe'\n")
    line = error(path)
    assert str(path) in line and "UTF-8" in line


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.mkdir()  # a directory where the file should be: unreadable on every platform and user
    line = error(path)
    assert str(path) in line and "cannot read" in line


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("KATPILOT_N_CTX", "abc", "integer"),
        ("KATPILOT_N_CTX", "true", "integer"),
        ("KATPILOT_N_CTX", "none", "integer"),  # not optional: none is not allowed
        ("KATPILOT_N_CTX", "10", ">= 256"),
        ("KATPILOT_TEMPERATURE", "warm", "number"),
        ("KATPILOT_TOP_P", "nan", "finite"),
        ("KATPILOT_THINK", "sometimes", "'auto', 'on', 'off'"),
    ],
)
def test_bad_env_value_names_the_variable(tmp_path: Path, var: str, value: str, expected: str) -> None:
    line = error(tmp_path / "absent.toml", {var: value})
    assert var in line and expected in line and f"unset {var}" in line


def test_bad_flag_value_and_unknown_flag(tmp_path: Path) -> None:
    line = error(tmp_path / "absent.toml", flags={"n_ctx": True, "temprature": 1.0})
    assert "flag --n-ctx" in line and "integer, got boolean" in line
    assert "--temprature" in line and "temperature" in line


def test_all_problems_from_all_layers_in_one_error(tmp_path: Path) -> None:
    path = write(tmp_path, "n_ctx = true\nbogus = 1\n")
    line = error(path, {"KATPILOT_SEED": "x"}, {"top_k": -3})
    for part in ("'n_ctx'", "'bogus'", "KATPILOT_SEED", "--top-k"):
        assert part in line
    assert line.count("; ") >= 3


# --- config show ----------------------------------------------------------------------------------


def test_render_show_lists_every_setting_with_its_source(tmp_path: Path) -> None:
    path = write(tmp_path, 'top_k = 7\n[models]\nfast = "/m/fast.gguf"\n')
    resolved = load(path, {"KATPILOT_THINK": "off"}, {"n_ctx": 8192})
    text = render_show(resolved)
    assert f"config file: {path} (exists)" in text
    lines = text.splitlines()
    for f in dataclasses.fields(Settings):
        row = next(line for line in lines if line.split(" ", 1)[0] == f.name)
        assert row.rstrip().endswith(resolved.sources[f.name])
    assert any(line.startswith("top_k") and " 7 " in line for line in lines)
    assert any(line.startswith("n_ctx") and "flag --n-ctx" in line for line in lines)
    think = next(line for line in lines if line.startswith("think"))
    assert '"off"' in think and think.endswith("env KATPILOT_THINK")
    assert 'fast = "/m/fast.gguf"' in text
    assert "not found" in render_show(load(tmp_path / "absent.toml"))


def test_render_show_masks_secret_settings_only(tmp_path: Path) -> None:
    @dataclasses.dataclass(frozen=True)
    class WithSecrets(Settings):
        api_key: str | None = "sk-very-secret"
        hf_token: str | None = "hf_secret"
        unset_token: str | None = None

    resolved = ResolvedConfig(
        settings=WithSecrets(max_tokens=77),
        sources={"api_key": "env KATPILOT_API_KEY"},
        config_path=tmp_path / "absent.toml",
    )
    text = render_show(resolved)
    assert "sk-very-secret" not in text and "hf_secret" not in text
    api = next(line for line in text.splitlines() if line.startswith("api_key"))
    assert "***" in api and api.endswith("env KATPILOT_API_KEY")
    assert "***" in next(line for line in text.splitlines() if line.startswith("hf_token"))
    # a count of tokens is not a secret
    assert "77" in next(line for line in text.splitlines() if line.startswith("max_tokens"))
    assert config._is_secret("openai_api_key") and config._is_secret("apikey")
    assert not config._is_secret("max_tokens") and not config._is_secret("n_ctx")
