"""MTP heads (trainer/mtp.py) on tiny random llama / qwen2 / qwen3 models: shared embedding and head,
the DeepSeek-V3 wiring, the loss, the lambda schedule, save / reload, and quant's export of the heads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="MTP heads need the train extra")
transformers = pytest.importorskip("transformers", reason="MTP heads need the train extra")

from katpilot.errors import KatpilotError  # noqa: E402
from quant.architectures import expected_shapes, mtp_shapes, plan_tensors, read_hyper  # noqa: E402
from quant.checkpoint import open_checkpoint  # noqa: E402
from quant.export import export_checkpoint  # noqa: E402
from quant.mtp import load_mtp_heads as read_companion  # noqa: E402
from trainer.mtp import (  # noqa: E402
    DEEPSEEK_V3_SWITCH,
    HEADS_FILE,
    MTPHeads,
    load_mtp_heads,
    mtp_lambda,
    mtp_loss,
    save_mtp_heads,
)

VOCAB, LENGTH = 128, 24


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)  # the machine's cores are shared


def tiny(arch: str = "llama", seed: int = 0, **overrides: Any) -> Any:
    """A tiny random causal LM of `arch`, in eval mode (no dropout anywhere)."""
    torch.manual_seed(seed)
    settings: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        # Wider than the default 0.02: with a head that small the logits stay flat whatever the heads learn.
        "initializer_range": 0.08,
    }
    if arch == "qwen3":
        settings["head_dim"] = 32  # qwen3 decouples head_dim from hidden / heads
    config = transformers.AutoConfig.for_model(arch, **(settings | overrides))
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def batch(rows: int = 4, seed: int = 0) -> Any:
    """Arithmetic runs mod VOCAB (a start and a stride per row): every future token is predictable."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (rows, 1), generator=generator)
    stride = torch.tensor([[1], [3], [5], [7]])[:rows]
    return (start + stride * torch.arange(LENGTH)) % VOCAB


def last_hidden(model: Any, ids: Any, attention_mask: Any = None) -> Any:
    """The main model's normed last hidden state, as a Trainer's forward returns it."""
    with torch.no_grad():
        return model(ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[-1]


def tokenizer_json() -> dict[str, Any]:
    """A byte-level BPE tokenizer of VOCAB tokens (GPT-2's first byte symbols, no merges) for quant."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = dict(zip(printable, map(chr, printable), strict=True))
    symbols |= {b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in symbols)}
    vocab = {symbols[b]: i for i, b in enumerate(range(VOCAB))}
    return {
        "version": "1.0",
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    }


def checkpoint_with_heads(model: Any, heads: MTPHeads, dest: Path, sharded: bool = False) -> Path:
    model.save_pretrained(dest, max_shard_size="100KB" if sharded else "5GB")
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer_json()), encoding="utf-8")
    save_mtp_heads(heads, dest)
    return dest


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_heads_share_the_models_embedding_norm_and_head(arch: str) -> None:
    model = tiny(arch)
    heads = MTPHeads(model, depth=2)
    assert heads.shared.embed is model.get_input_embeddings()
    assert heads.shared.head is model.get_output_embeddings()
    assert heads.shared.norm is model.model.norm and heads.shared.rotary is model.model.rotary_emb
    assert heads.shared.embed.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert heads.shared.head.weight.data_ptr() == model.lm_head.weight.data_ptr()
    # Borrowed, not owned: the heads' parameters (what an optimizer of the heads moves) are their own.
    model_params = {id(p) for p in model.parameters()}
    assert not any(id(p) in model_params for p in heads.parameters())
    assert all(name.startswith("layers.") for name in heads.state_dict())
    # One decoder block of the model's own class per depth, indexed after the model's blocks.
    for k, module in enumerate(heads.modules_by_depth()):
        assert type(module.block) is type(model.model.layers[0])
        block: Any = module.block
        assert block.self_attn.layer_idx == model.config.num_hidden_layers + k
    # Changing the model's head in place changes the heads' predictions: one tensor, not a copy.
    state = heads(batch(), last_hidden(model, batch()))[0]
    before = heads.logits(state)
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)
    assert torch.allclose(heads.logits(state), 2.0 * before, atol=1e-5)


def test_module_input_is_the_normed_embedding_of_token_i_plus_k_then_the_normed_state() -> None:
    model = tiny()
    heads = MTPHeads(model, depth=1)
    ids = batch()
    hidden = last_hidden(model, ids)
    seen: dict[str, Any] = {}
    module = heads.modules_by_depth()[0]
    module.eh_proj.register_forward_pre_hook(lambda _, args: seen.update(concat=args[0]))
    with torch.no_grad():
        heads(ids, hidden)
        embedding_half, state_half = seen["concat"].split(64, dim=-1)
        assert torch.equal(embedding_half, module.enorm(model.model.embed_tokens(ids[:, 1:])))
        assert torch.equal(state_half, module.hnorm(hidden[:, :-1]))
    # h^0 is the main model's last hidden state after its final norm, which is what hidden_states[-1] holds.
    captured: dict[str, Any] = {}
    handle = model.model.norm.register_forward_pre_hook(lambda _, args: captured.update(pre=args[0]))
    again = last_hidden(model, ids)
    handle.remove()
    with torch.no_grad():
        assert torch.equal(again, model.model.norm(captured["pre"]))


def test_the_second_depth_reads_the_first_depths_output() -> None:
    model = tiny()
    heads = MTPHeads(model, depth=2)
    ids = batch()
    hidden = last_hidden(model, ids)
    first, second = heads.modules_by_depth()
    seen: dict[str, Any] = {}
    second.hnorm.register_forward_pre_hook(lambda _, args: seen.update(previous=args[0]))
    with torch.no_grad():
        states = heads(ids, hidden)
        assert [tuple(s.shape) for s in states] == [(4, LENGTH - 1, 64), (4, LENGTH - 2, 64)]
        assert torch.equal(seen["previous"], states[0][:, : LENGTH - 2])
        # Perturbing the first module moves the second's output; perturbing the second leaves the first's.
        first.eh_proj.weight.add_(0.01)
        moved = heads(ids, hidden)
        assert not torch.allclose(moved[0], states[0]) and not torch.allclose(moved[1], states[1])
        second.eh_proj.weight.add_(0.01)
        again = heads(ids, hidden)
        assert torch.equal(again[0], moved[0]) and not torch.allclose(again[1], moved[1])


def test_mtp_loss_falls_on_a_fixed_batch() -> None:
    model = tiny()
    heads = MTPHeads(model, depth=2)
    ids = batch()
    hidden = last_hidden(model, ids)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=3e-3)
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    losses = []
    for _ in range(40):
        result = mtp_loss(heads, ids, ids, hidden, lam=1.0)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result.loss.item())
    assert losses[-1] < 0.25 * losses[0], losses
    assert all(part < 0.5 * losses[0] for part in (p.item() for p in result.depth_losses))
    # Only the heads moved: the shared embedding and head belong to the model, which this loop leaves alone.
    assert all(torch.equal(p, frozen[name]) for name, p in model.named_parameters())


def test_loss_is_lambda_over_depth_times_the_summed_cross_entropies_ignoring_minus_100() -> None:
    model = tiny()
    heads = MTPHeads(model, depth=2)
    ids = batch()
    hidden = last_hidden(model, ids)
    labels = ids.clone()
    labels[:, :6] = -100  # a prompt
    labels[1, 10:14] = -100
    labels[3] = -100  # a row with nothing to learn
    with torch.no_grad():
        result = mtp_loss(heads, ids, labels, hidden, lam=0.3)
        states = heads(ids, hidden)
    by_hand = []
    for k, state in enumerate(states, start=1):  # position i of depth k predicts token i+k+1
        log_probs = torch.log_softmax(heads.logits(state).float(), dim=-1)
        terms = [
            -log_probs[b, i, labels[b, i + k + 1]]
            for b in range(ids.shape[0])
            for i in range(LENGTH - k - 1)
            if labels[b, i + k + 1] != -100
        ]
        by_hand.append(torch.stack(terms).mean())
    assert torch.allclose(torch.stack(result.depth_losses), torch.stack(by_hand), atol=1e-5)
    assert torch.allclose(result.loss, 0.3 / 2 * sum(by_hand), atol=1e-5)
    # num_items_in_batch (a Trainer's count under gradient accumulation) divides the sums instead.
    with torch.no_grad():
        summed = mtp_loss(heads, ids, labels, hidden, lam=0.3, num_items_in_batch=100)
    counts = [(labels[:, k + 1 :] != -100).sum() for k in (1, 2)]
    expected = [loss * count / 100 for loss, count in zip(by_hand, counts, strict=True)]
    assert torch.allclose(torch.stack(summed.depth_losses), torch.stack(expected), atol=1e-5)
    # Nothing to learn is a zero loss, not a NaN.
    with torch.no_grad():
        nothing = mtp_loss(heads, ids, torch.full_like(ids, -100), hidden, lam=0.3)
    assert nothing.loss.item() == 0.0


def test_right_padding_leaves_the_real_positions_alone() -> None:
    model = tiny()
    heads = MTPHeads(model, depth=2)
    ids = batch()
    short = 15
    padded, mask = ids.clone(), torch.ones_like(ids)
    padded[1, short:], mask[1, short:] = 0, 0
    with torch.no_grad():
        states = heads(padded, last_hidden(model, padded, mask), attention_mask=mask)
        alone = heads(ids[1:2, :short], last_hidden(model, ids[1:2, :short]))
    for k, (state, reference) in enumerate(zip(states, alone, strict=True), start=1):
        assert torch.allclose(state[1, : short - k], reference[0], atol=1e-5)


def test_a_sliding_window_block_gets_a_sliding_window_mask() -> None:
    # qwen2's last block is a sliding-window one here; the MTP block copies its kind (window 4).
    model = tiny("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1)
    heads = MTPHeads(model, depth=1)
    ids = batch()
    hidden = last_hidden(model, ids)
    nudged = hidden.clone()
    nudged[:, 0] += 1.0
    with torch.no_grad():
        before, after = heads(ids, hidden)[0], heads(ids, nudged)[0]
    changed = [not torch.allclose(before[:, i], after[:, i]) for i in range(LENGTH - 1)]
    assert changed[:4] == [True] * 4 and not any(changed[4:])


def test_lambda_follows_deepseek_v3() -> None:
    assert pytest.approx(10 / 14.8) == DEEPSEEK_V3_SWITCH
    assert [mtp_lambda(step, 1000) for step in (0, 675, 676, 999)] == [0.3, 0.3, 0.1, 0.1]
    assert [mtp_lambda(step, 10, switch_at=0.5) for step in (4, 5)] == [0.3, 0.1]
    assert mtp_lambda(3, 10, switch_at=0.0, first=0.5, then=0.2) == 0.2
    with pytest.raises(ValueError):
        mtp_lambda(0, 0)
    with pytest.raises(ValueError):
        mtp_lambda(0, 10, switch_at=1.5)


@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
def test_save_and_reload_are_bit_exact(tmp_path: Path, sharded: bool) -> None:
    model = tiny()
    heads = MTPHeads(model, depth=2)
    ids = batch()
    optimizer = torch.optim.AdamW(heads.parameters(), lr=3e-3)
    for _ in range(3):  # trained heads, so nothing equals its initial value by chance
        optimizer.zero_grad()
        mtp_loss(heads, ids, ids, last_hidden(model, ids), lam=1.0).loss.backward()
        optimizer.step()
    ckpt = checkpoint_with_heads(model, heads, tmp_path / "ckpt", sharded=sharded)
    assert save_mtp_heads(heads, ckpt) == ckpt / HEADS_FILE  # saving again replaces, never duplicates
    assert json.loads((ckpt / "config.json").read_text())["num_nextn_predict_layers"] == 2
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    assert sorted(k for k, v in index["weight_map"].items() if v == HEADS_FILE) == sorted(heads.checkpoint_tensors())
    assert not (ckpt / "model.safetensors").exists() and not list(ckpt.glob("*.partial"))

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(ckpt).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)  # the main model is untouched
    again = load_mtp_heads(reloaded, ckpt)
    saved, loaded = heads.checkpoint_tensors(), again.checkpoint_tensors()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[name], loaded[name]) and saved[name].dtype == loaded[name].dtype for name in saved)
    hidden = last_hidden(model, ids)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(heads(ids, hidden), again(ids, hidden), strict=True))
        assert torch.equal(
            mtp_loss(heads, ids, ids, hidden, lam=0.3).loss, mtp_loss(again, ids, ids, hidden, lam=0.3).loss
        )


@pytest.mark.parametrize(("arch", "sharded"), [("llama", False), ("qwen3", True)])
def test_quant_exports_the_saved_heads_unchanged(tmp_path: Path, arch: str, sharded: bool) -> None:
    model = tiny(arch)
    heads = MTPHeads(model, depth=2)
    with torch.no_grad():  # distinct values everywhere, so a mix-up of names shows
        for p in heads.parameters():
            p.normal_()
    ckpt = checkpoint_with_heads(model, heads, tmp_path / "ckpt", sharded=sharded)
    saved = {name: value.float().numpy() for name, value in heads.checkpoint_tensors().items()}

    # Exactly the names and shapes quant expects of DeepSeek-V3-style MTP blocks L and L+1.
    checkpoint = open_checkpoint(ckpt)
    hp = read_hyper(checkpoint)
    assert (hp.blocks, hp.mtp_blocks) == (2, 2)
    expected: dict[str, tuple[int, ...]] = {}
    for block in (2, 3):
        expected |= expected_shapes(hp, block) | mtp_shapes(hp, block)
    assert {name: value.shape for name, value in saved.items()} == expected
    assert sum(plan.mtp for plan in plan_tensors(checkpoint, hp)) == len(saved)

    report = export_checkpoint(ckpt, tmp_path / "model.gguf", "f32")
    assert (report.companion, report.mtp_heads) == (tmp_path / "model.mtp.gguf", 2)
    exported = read_companion(tmp_path / "model.mtp.gguf")
    assert exported.keys() == saved.keys()
    assert all(np.array_equal(exported[name], saved[name]) for name in saved)


def test_heads_ride_on_a_lora_model() -> None:
    peft = pytest.importorskip("peft")
    model = tiny()
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "lm_head"]))
    heads = MTPHeads(lora, depth=1)
    assert heads.shared.embed is model.get_input_embeddings()
    assert heads.shared.head is lora.get_base_model().get_output_embeddings()  # the LoRA-wrapped head
    ids = batch()
    outputs = lora(ids, labels=ids, output_hidden_states=True)
    total = outputs.loss + mtp_loss(heads, ids, ids, outputs.hidden_states[-1], lam=0.3).loss
    total.backward()
    assert heads.modules_by_depth()[0].eh_proj.weight.grad is not None
    assert all(p.grad is not None for name, p in lora.named_parameters() if "lora_" in name)


def test_loading_refuses_what_does_not_fit(tmp_path: Path) -> None:
    model = tiny()
    model.save_pretrained(tmp_path / "plain")
    with pytest.raises(KatpilotError, match="has no MTP heads"):
        load_mtp_heads(model, tmp_path / "plain")
    ckpt = checkpoint_with_heads(model, MTPHeads(model, depth=1), tmp_path / "ckpt")
    with pytest.raises(KatpilotError, match="has 2 layers, the model 3"):
        load_mtp_heads(tiny(num_hidden_layers=3), ckpt)
    with pytest.raises(KatpilotError, match="has 2 layers, the heads' model 3"):
        save_mtp_heads(MTPHeads(tiny(num_hidden_layers=3)), ckpt)
    with pytest.raises(KatpilotError, match="is missing"):
        save_mtp_heads(MTPHeads(model), tmp_path / "nowhere")
