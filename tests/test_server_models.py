"""`katpilot serve --models`: several listed models served by name, one loaded at a time and
swapped on demand (as Ollama does), on a real server process with two store models.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx2 as httpx
from server_helpers import running_server
from store_helpers import ollama_model


def ask(base: str, model: str | None) -> httpx.Response:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "temperature": 0}
    if model is not None:
        body["model"] = model
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)


def test_two_listed_models_answer_by_name_one_loaded_at_a_time(katpilot_home: Path, model_path: Path) -> None:
    ollama = katpilot_home / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    for i, name in enumerate(("alpha", "beta")):
        digest = f"{i + 7:02d}" * 32
        shutil.copy(model_path, ollama / "blobs" / f"sha256-{digest}")  # two files: two models
        ollama_model(ollama, model_path, "registry.ollama.ai", "library", name, "latest", digest=digest)
    with running_server(katpilot_home, "--models", "alpha:latest,beta:latest", "--n-ctx", "512") as srv:
        listed = httpx.get(f"{srv.v1}/models", timeout=10).json()
        assert [m["id"] for m in listed["data"]] == ["alpha:latest", "beta:latest"]
        assert httpx.get(f"{srv.base_url}/health", timeout=10).json()["model"] == "alpha:latest"

        reply = ask(srv.base_url, "beta:latest")
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == "beta:latest"
        assert httpx.get(f"{srv.base_url}/health", timeout=10).json()["model"] == "beta:latest"  # swapped in

        again = ask(srv.base_url, None)  # no model named: the loaded one answers, no swap
        assert again.status_code == 200 and again.json()["model"] == "beta:latest"
        back = ask(srv.base_url, "alpha:latest")
        assert back.status_code == 200 and back.json()["model"] == "alpha:latest"
        assert httpx.get(f"{srv.base_url}/health", timeout=10).json()["model"] == "alpha:latest"

        unknown = ask(srv.base_url, "gamma:latest")
        assert unknown.status_code == 404
        assert "this server serves 'alpha:latest', 'beta:latest'" in unknown.json()["error"]["message"]
        card = httpx.get(f"{srv.v1}/models/beta:latest", timeout=10)
        assert card.status_code == 200 and card.json()["id"] == "beta:latest"
    log = srv.output()
    assert log.count("loaded beta:latest in place of the previous model") == 1
    assert log.count("loaded alpha:latest in place of the previous model") == 1
