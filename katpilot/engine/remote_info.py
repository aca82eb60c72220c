"""What a server serves, and where a remote model's chat template, BOS/EOS and context come from.

katpilot renders the chat template itself (the session prefills the assistant turn), so a remote
model needs its template on our side. First that answers wins: the server's `/props` (llama.cpp's
own server); else `remote_gguf`, a local GGUF or a Hugging Face `tokenizer_config.json` of the same
model (what vLLM serves from); else the served model id when it is a readable local GGUF
(llama-cpp-python's server names models by their path). Otherwise a one-line error says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from katpilot.engine.base import ModelInfo
from katpilot.engine.http_client import CONNECT_TIMEOUT_S, Client, not_openai
from katpilot.engine.server_url import RemoteSpec
from katpilot.errors import EngineError, KatpilotError
from katpilot.gate import KAT_TAGS
from katpilot.gguf_file import read_gguf, require_chat_template


def list_models(spec: RemoteSpec, client: Client | None = None, api_key: str | None = None) -> list[str]:
    """GET /v1/models: the ids the server serves."""
    client = client or Client(spec, api_key, CONNECT_TIMEOUT_S * 3)
    doc = client.json("GET", "/v1/models")
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise not_openai(spec.base_url, "GET /v1/models has no data list")
    return [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")]


def remote_model_info(client: Client, model: str, n_ctx: int, template_gguf: str | Path | None) -> ModelInfo:
    """The served `model`'s ModelInfo, from the first template source that answers (see above)."""
    props = _props(client)
    name = model.rsplit("/", 1)[-1]
    if props.get("chat_template"):
        settings = props.get("default_generation_settings") or {}
        server_ctx = settings.get("n_ctx") or props.get("n_ctx") or n_ctx
        return ModelInfo(
            name=name,
            path=None,
            architecture="remote",
            chat_template=props["chat_template"],
            bos_token=props.get("bos_token") or "",
            eos_token=props.get("eos_token") or "",
            n_ctx=min(n_ctx, int(server_ctx)),
        )
    source = Path(template_gguf).expanduser() if template_gguf else None
    if source is None and model.endswith(".gguf") and Path(model).is_file():
        source = Path(model)
    if source is None:
        raise EngineError(
            f"the server at {client.spec.base_url} does not report model {model!r}'s chat template",
            "set remote_gguf (config or KATPILOT_REMOTE_GGUF) to a local GGUF of the same model",
        )
    if source.suffix == ".json":
        return _info_from_tokenizer_config(name, source, n_ctx)
    summary = read_gguf(source)
    require_chat_template(summary)
    return ModelInfo(
        name=name,
        path=None,
        architecture=summary.architecture,
        chat_template=summary.chat_template or "",
        bos_token=summary.bos_token or "",
        eos_token=summary.eos_token or "",
        n_ctx=min(n_ctx, summary.context_length or n_ctx),
        tags_in_vocab=summary.tags_in_vocab,
        fim_tokens=summary.fim_tokens,
    )


def _props(client: Client) -> dict[str, Any]:
    """llama.cpp server's /props (template, BOS/EOS, context), or {} where there is none.

    A refused key is still an error: every other failure only means this server has no /props.
    """
    try:
        doc = client.json("GET", "/props")
    except EngineError as exc:
        if "API key" in exc.message:
            raise
        return {}
    return doc if isinstance(doc, dict) else {}


def _info_from_tokenizer_config(name: str, path: Path, n_ctx: int) -> ModelInfo:
    """A Hugging Face tokenizer_config.json (what vLLM serves from) as the template source."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KatpilotError(
            f"cannot read {path}: {exc}", "set remote_gguf to a GGUF or a tokenizer_config.json"
        ) from None

    def token(key: str) -> str:
        value = doc.get(key) or ""
        return str(value.get("content", "")) if isinstance(value, dict) else str(value)

    template = doc.get("chat_template")
    if isinstance(template, list):  # the named-templates form: take the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if not template:
        raise KatpilotError(f"{path} has no chat_template", "set remote_gguf to a file of the same model that has one")
    added = doc.get("added_tokens_decoder") or {}
    tags = frozenset(str(t.get("content")) for t in added.values() if isinstance(t, dict)) & KAT_TAGS
    ctx = doc.get("model_max_length")
    limit = int(ctx) if isinstance(ctx, (int, float)) and 0 < ctx < 10**7 else n_ctx
    return ModelInfo(
        name=name,
        path=None,
        architecture="remote",
        chat_template=str(template),
        bos_token=token("bos_token"),
        eos_token=token("eos_token"),
        n_ctx=min(n_ctx, limit),
        tags_in_vocab=tags,
    )
