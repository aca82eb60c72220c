"""`katpilot lsp` completion latency against the same completion computed in-process, side by side.

    python bench/lsp.py [--requests 50] [--tokens 32] [--prefix-chars 1500] [--source FILE]

Each request is a document of `--prefix-chars` characters of a real source file before the cursor
(and a few lines after it), with the cursor at the end of a line. The server (its own process,
`katpilot lsp`, stdio, debounce 0) answers `textDocument/inlineCompletion` with at most `--tokens`
tokens. The direct side builds the same prompt (same repository context, from the same index) and
runs the same completion on an engine in this process. Requests alternate between the two sides and
each side has its own engine, so both see the same KV-cache history and the same machine load.

Target (issue 8): p50 and p95 latency through the server <= 1.10x the direct ones. Both sides
must produce the same text; the bench counts any difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as `python bench/lsp.py`, this file's folder comes first on sys.path and its own name would
# hide the `lsp` package it measures.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from lsprotocol import types  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402

from katpilot.config import load_settings  # noqa: E402
from katpilot.engine.local import LocalEngine  # noqa: E402
from katpilot.index import RepoIndex  # noqa: E402
from katpilot.models import embedded_model_path  # noqa: E402
from lsp import generate  # noqa: E402
from lsp.work import describe_definition  # noqa: E402

TARGET = 1.10
SUFFIX_CHARS = 300
DEFAULT_SOURCE = Path(shutil.__file__)  # a real module, already on every machine


def cursor_offsets(text: str, count: int, prefix_chars: int) -> list[int]:
    """`count` line ends spread over the file, each with at least `prefix_chars` before it."""
    ends = [i for i, ch in enumerate(text) if ch == "\n" and i >= prefix_chars and text[i - 1] not in "\n "]
    if len(ends) < count:
        sys.exit(f"bench/lsp.py: the source has only {len(ends)} usable lines; pass a larger --source")
    step = len(ends) / count
    return [ends[int(i * step)] for i in range(count)]


def documents(source: Path, workspace: Path, count: int, prefix_chars: int) -> list[tuple[Path, str, int]]:
    """(path, text, cursor offset) per request: a window of the source around each cursor."""
    text = source.read_text()
    docs = []
    for i, end in enumerate(cursor_offsets(text, count, prefix_chars)):
        window = text[end - prefix_chars : end + SUFFIX_CHARS]
        path = workspace / f"doc_{i:02d}.py"
        path.write_text(window)
        docs.append((path, window, prefix_chars))
    return docs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Direct:
    """The completion computed in this process: same prompt, same engine settings."""

    def __init__(self, workspace: Path, threads: int, tokens: int) -> None:
        self.settings = load_settings({"n_threads": threads}).settings
        self.engine = LocalEngine(embedded_model_path(), n_ctx=self.settings.n_ctx, n_threads=threads)
        self.index = RepoIndex(workspace)
        self.index.refresh()
        self.workspace = workspace
        self.tokens = tokens

    def complete(self, path: Path, text: str, offset: int) -> tuple[float, str]:
        row = text.count("\n", 0, offset)
        repo = [describe_definition(d) for d in self.index.definitions_near(path, row, text=text)]
        label = path.relative_to(self.workspace).as_posix()
        ctx = generate.cursor_context(self.engine, text, offset, label, "python", repo, self.tokens)
        params = generate.completion_sampling(self.settings, self.tokens)
        started = time.perf_counter()
        result = generate.complete(self.engine, self.settings, ctx, params, threading.Event())
        return time.perf_counter() - started, result


async def run(args: argparse.Namespace) -> None:
    threads = args.threads
    workspace = Path(tempfile.mkdtemp(prefix="katpilot-bench-lsp-"))
    home = Path(tempfile.mkdtemp(prefix="katpilot-bench-home-"))
    docs = documents(args.source, workspace, args.requests + args.warmup, args.prefix_chars)
    direct = Direct(workspace, threads, args.tokens)

    client = LanguageClient("bench", "1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATPILOT_")} | {"KATPILOT_HOME": str(home)}
    log = home / "lsp.log"
    await client.start_io(
        "/bin/sh", "-c", f'exec "{sys.executable}" -m katpilot lsp --n-threads {threads} 2>"{log}"', env=env
    )
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            root_uri=workspace.as_uri(),
            initialization_options={"debounce_ms": 0, "completion_max_tokens": args.tokens},
        )
    )
    client.initialized(types.InitializedParams())
    for path, text, _ in docs:
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(path.as_uri(), "python", 1, text))
        )
    await asyncio.sleep(2)  # the server's index build and model load

    async def through_server(path: Path, text: str, offset: int) -> tuple[float, str]:
        line = text.count("\n", 0, offset)
        character = offset - (text.rfind("\n", 0, offset) + 1)
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
            text_document=types.TextDocumentIdentifier(path.as_uri()),
            position=types.Position(line, character),
        )
        started = time.perf_counter()
        result = await client.text_document_inline_completion_async(params)
        seconds = time.perf_counter() - started
        return seconds, (result.items[0].insert_text if result and result.items else "")

    server_s: list[float] = []
    direct_s: list[float] = []
    tokens: list[int] = []
    different = 0
    for i, (path, text, offset) in enumerate(docs):
        lsp_time, lsp_text = await through_server(path, text, offset)
        direct_time, direct_text = direct.complete(path, text, offset)
        if i < args.warmup:
            continue
        server_s.append(lsp_time)
        direct_s.append(direct_time)
        tokens.append(direct.engine.count_tokens(direct_text))
        different += lsp_text != direct_text
        print(f"\r{len(server_s)}/{args.requests} requests", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    direct.engine.close()
    direct.index.close()

    print(
        f"{args.requests} completions, {args.prefix_chars}-character prefixes of {args.source.name}, "
        f"at most {args.tokens} tokens (mean {statistics.mean(tokens):.1f} generated, cut at boundaries), {threads} threads"
    )
    print(f"{'':12}{'p50 ms':>10}{'p95 ms':>10}")
    for name, values in (("lsp", server_s), ("direct", direct_s)):
        print(f"{name:12}{percentile(values, 0.5) * 1000:10.1f}{percentile(values, 0.95) * 1000:10.1f}")
    for q, label in ((0.5, "p50"), (0.95, "p95")):
        ratio = percentile(server_s, q) / percentile(direct_s, q)
        print(f"{label} ratio lsp/direct: {ratio:.3f} (target <= {TARGET}) {'OK' if ratio <= TARGET else 'MISSED'}")
    print(f"completions that differ between the two sides: {different} of {args.requests}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--prefix-chars", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
