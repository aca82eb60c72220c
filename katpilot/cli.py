"""The `katpilot` command: a thin typer layer over the library (one typed function per command).

Errors the user can fix (`KatpilotError`) become one line on stderr and exit code 2; anything else
one line and exit code 1 (KATPILOT_DEBUG=1 shows the traceback). Never a traceback by default.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from katpilot import config as config_mod
from katpilot.errors import KatpilotError

if TYPE_CHECKING:
    from katpilot.index import RefreshReport, RepoIndex
    from katpilot.session import Response

app = typer.Typer(
    name="katpilot",
    help="A local-first coding assistant around AutoThink models (think only when it pays).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="List models, or show what is inside a GGUF file.", invoke_without_command=True)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
quant_app = typer.Typer(help="Quantize GGUF models (llama.cpp's quantizer).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
train_app = typer.Typer(
    help="Train an AutoThink model on your code: data (serving install), then sft (the train extra).",
    no_args_is_help=True,
)
app.add_typer(quant_app, name="quant")
app.add_typer(train_app, name="train")

# Options shared by commands that run a model; None means "not given" (config and env decide).
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="GGUF path, an alias from the config's models table, or a server: openai+http://host:port/v1#model.",
    ),
]
ProfileOpt = Annotated[str | None, typer.Option(help="Format family: auto, kat, think or plain.")]
ThinkOpt = Annotated[str | None, typer.Option("--think", help="auto (the model judges), on or off.")]
BudgetOpt = Annotated[int | None, typer.Option("--budget", help="Close the think block after N tokens.")]
ThresholdOpt = Annotated[float | None, typer.Option("--threshold", help="think=auto: think when p(on) >= P.")]
NCtxOpt = Annotated[int | None, typer.Option(help="Context window in tokens.")]
NThreadsOpt = Annotated[int | None, typer.Option()]


def _flags(**values: object) -> dict[str, object]:
    return {name: value for name, value in values.items() if value is not None}


def _read_stdin() -> str:
    """Text piped in (`cat file.py | katpilot ask ...`); empty when stdin is a terminal.

    Read as bytes and decoded as UTF-8 with replacement, so a Latin-1 file or a binary still
    reaches the model (with U+FFFD where bytes were not text) rather than failing or vanishing.
    """
    stream = sys.stdin
    if stream is None or stream.closed or stream.isatty():
        return ""
    data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode("utf-8", "replace")
    text = data.decode("utf-8", errors="replace")
    if "\ufffd" in text and b"\xef\xbf\xbd" not in data:
        print("katpilot: stdin is not valid UTF-8: undecodable bytes were replaced", file=sys.stderr)
    return text


def _with_context(question: str, context: str) -> str:
    if not context.strip():
        return question
    return f"{question}\n\n```\n{context.rstrip()}\n```"


def _who_decided(decided_by: str, profile: str) -> str:
    """Who chose the think mode, as the footer says it; for nobody ("none"), why nobody did.

    A plain model has no decision point: printing "model" there claimed a choice that never happened.
    """
    from katpilot.gate import NO_DECISION

    if decided_by != NO_DECISION:
        return decided_by
    from katpilot.profiles import PROFILES

    known = PROFILES.get(profile)
    if known is not None and known.decision == "none":
        return f"no decision: {profile} model"
    return "no decision: it ended before the decision point"


def _status_line(response: Response) -> str:
    stats = response.stats
    p_on = f", p(on)={response.p_on:.3f}" if response.p_on is not None else ""
    parts = [
        f"think {response.mode} ({_who_decided(response.decided_by, response.profile)}{p_on})",
        f"{stats.completion_tokens} tokens (judge {stats.judge_tokens}, think {stats.think_tokens}, answer {stats.answer_tokens})",
        f"{stats.tokens_per_s:.0f} tok/s",
    ]
    if stats.finish_reason not in ("stop",):
        parts.append(f"stopped: {stats.finish_reason}")
    return "[" + " · ".join(parts) + "]"


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question; text piped on stdin is added as context.")],
    think: ThinkOpt = None,
    budget: BudgetOpt = None,
    threshold: ThresholdOpt = None,
    show_thinking: Annotated[
        bool, typer.Option("--show-thinking", help="Stream judge and thinking to stderr.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of streaming.")] = False,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy.")] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    top_k: Annotated[int | None, typer.Option()] = None,
    min_p: Annotated[float | None, typer.Option()] = None,
    repeat_penalty: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    n_ctx: NCtxOpt = None,
    n_threads: NThreadsOpt = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
) -> None:
    """Ask one question; the answer goes to stdout, thinking (if shown) to stderr."""
    from katpilot.gate import NO_DECISION, Decision, Segment, Text
    from katpilot.models import load_engine, new_session, think_controls
    from katpilot.session import Finished, Notice

    resolved = config_mod.load_settings(
        _flags(
            model=model,
            profile=profile,
            think=think,
            budget=budget,
            threshold=threshold,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            seed=seed,
            max_tokens=max_tokens,
            n_ctx=n_ctx,
            n_threads=n_threads,
            system_prompt=system,
        )
    )
    settings = resolved.settings
    controls = think_controls(settings)
    prompt = _with_context(question, _read_stdin())
    engine = load_engine(settings)
    session = new_session(engine, settings)
    out, err = sys.stdout, sys.stderr
    response = None
    current = None
    for event in session.send(prompt, controls):
        if isinstance(event, Finished):
            response = event.response
        elif as_json:
            continue
        elif isinstance(event, Text) and event.segment is Segment.ANSWER:
            out.write(event.text)
            out.flush()
        elif isinstance(event, Text) and show_thinking and event.segment in (Segment.JUDGE, Segment.THINK):
            if current is not event.segment:
                err.write(f"\n[{event.segment.value}] ")
                current = event.segment
            err.write(event.text)
            err.flush()
        elif isinstance(event, Decision) and show_thinking:
            if event.decided_by == NO_DECISION:
                err.write(f"\n[think {event.mode} ({_who_decided(event.decided_by, session.profile.name)})]\n")
            else:
                err.write(f"\n[decision: think {event.mode} by {event.decided_by}]\n")
            current = None
        elif isinstance(event, Notice):
            err.write(f"\nkatpilot: {event.text}\n")
    assert response is not None
    if as_json:
        out.write(json.dumps(response.to_dict(), ensure_ascii=False) + "\n")
    else:
        out.write("\n")
        out.flush()  # the status line must not land inside the answer when both go to one file
        err.write(_status_line(response) + "\n")


@models_app.callback()
def models_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per model).")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also say which store entries were skipped, and why.")
    ] = False,
) -> None:
    """List models: the embedded default, \\[models] aliases, and GGUFs in Ollama, LM Studio, llama.cpp and HF caches."""
    if ctx.invoked_subcommand is not None:
        return
    from katpilot.errors import ModelFileError
    from katpilot.models import list_models, resolve_model

    settings = config_mod.load_settings().settings
    if not as_json:
        _list_remote_models(settings)
    try:
        default = resolve_model(settings.model, settings) if not _is_remote_setting(settings) else None
    except ModelFileError:
        default = None  # no default model installed: still list the others
    listed, notes = list_models(settings)
    if as_json:
        typer.echo(json.dumps([m.to_json(default) for m in listed], indent=2))
    else:
        typer.echo(f"  {'NAME':<32} {'SIZE':>9}  {'QUANT':<7} {'ARCH':<10} {'PROFILE':<7} {'SOURCE':<11} PATH")
        for m in listed:
            mark = "*" if m.path == default else " "
            h = m.header
            quant, arch, profile = (h.quantization, h.architecture, h.profile) if h else ("", "", "")
            size = f"{h.file_size / 2**20:.0f} MiB" if h else m.problem or "missing"
            typer.echo(f"{mark} {m.name:<32} {size:>9}  {quant:<7} {arch:<10} {profile:<7} {m.source:<11} {m.path}")
    if verbose:
        for m in listed:
            if m.reason:  # an alias of the config's [models] table that is listed but cannot load
                typer.echo(f"katpilot: models.{m.name}: {m.reason}", err=True)
    if notes and verbose:
        for note in notes:
            typer.echo(f"katpilot: {note}", err=True)
    elif notes:
        typer.echo(
            f"katpilot: {len(notes)} store entr{'y' if len(notes) == 1 else 'ies'} skipped (--verbose says why)",
            err=True,
        )


def _is_remote_setting(settings: config_mod.Settings) -> bool:
    from katpilot.models import remote_spec

    return remote_spec(settings.model, settings) is not None


def _list_remote_models(settings: config_mod.Settings) -> None:
    """When the configured model is on a server, list what that server serves (GET /v1/models)."""
    from katpilot.engine.remote import api_key_from, list_models, parse_spec
    from katpilot.models import remote_spec

    url = remote_spec(settings.model, settings)
    if url is None:
        return
    spec = parse_spec(url)
    ids = list_models(spec, api_key=api_key_from(settings.api_key))
    chosen = spec.model or (ids[0] if ids else None)
    for model_id in ids:
        mark = "*" if model_id == chosen else " "
        typer.echo(f"{mark} {model_id}  remote  {spec.base_url}")


@models_app.command("info")
def models_info(
    model: Annotated[str, typer.Argument(help="A GGUF file, or a name `katpilot models` lists.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a GGUF's metadata: architecture, size, quantization, template, profile, tags, MTP heads."""
    from katpilot.gguf_file import format_model_info, read_gguf
    from katpilot.models import resolve_model
    from katpilot.profiles import detect_profile

    settings = config_mod.load_settings().settings
    summary = read_gguf(resolve_model(model, settings))
    info = summary.model_info(detect_profile(summary.chat_template, summary.tags_in_vocab).name)
    typer.echo(json.dumps(info, indent=2) if as_json else format_model_info(info))


@config_app.command("show")
def config_show() -> None:
    """Print every setting, its effective value and where it came from."""
    typer.echo(config_mod.render_show(config_mod.load_settings()))


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; a non-loopback one needs --api-key or --insecure.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one (printed at start).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="KATPILOT_API_KEY", show_envvar=True, help="Require Authorization: Bearer KEY on /v1."
        ),
    ] = None,
    queue: Annotated[
        int, typer.Option("--queue", help="Requests waiting or running at once; more get 429.")
    ] = config_mod.SERVE_QUEUE_DEFAULT,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback address without an API key.")
    ] = False,
    profile: ProfileOpt = None,
    think: ThinkOpt = None,
    budget: BudgetOpt = None,
    threshold: ThresholdOpt = None,
    max_tokens: Annotated[int | None, typer.Option(help="Default max tokens per response.")] = None,
    n_ctx: NCtxOpt = None,
    n_threads: NThreadsOpt = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Serve several models by name: all (what `katpilot models` lists) or a comma-separated list; one is loaded at a time.",
        ),
    ] = None,
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (docs/server.md); flags set request defaults."""
    from katpilot.server.serve import ServeOptions
    from katpilot.server.serve import serve as run_server

    settings = config_mod.load_settings(
        _flags(
            model=model,
            profile=profile,
            think=think,
            budget=budget,
            threshold=threshold,
            max_tokens=max_tokens,
            n_ctx=n_ctx,
            n_threads=n_threads,
        )
    ).settings
    options = ServeOptions(host=host, port=port, api_key=api_key, queue=queue, insecure=insecure, models=models)
    run_server(settings, options)


@app.command("chat")
def chat_command(
    model: ModelOpt = None,
    think: ThinkOpt = None,
    budget: BudgetOpt = None,
    threshold: ThresholdOpt = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Reopen a chat: its ID, or 'last'.")] = None,
    workspace: Annotated[Path, typer.Option("--workspace", help="The repository /add and /map read.")] = Path("."),
) -> None:
    """Chat in the terminal: streaming answers, the thinking one key away, history that survives a crash."""
    from katpilot.chat.app import ChatApp
    from katpilot.history import History

    settings = config_mod.load_settings(_flags(model=model, think=think, budget=budget, threshold=threshold)).settings
    chat_id = None
    if resume is not None:
        with History() as store:
            chat_id = store.resolve_chat(resume)
    ChatApp(settings, workspace=workspace, resume=chat_id).run()


@app.command("lsp")
def lsp_command(
    tcp: Annotated[
        str | None, typer.Option("--tcp", help="Listen on \\[HOST:]PORT instead of stdio; HOST defaults to 127.0.0.1.")
    ] = None,
    model: ModelOpt = None,
    think: ThinkOpt = None,
    budget: BudgetOpt = None,
    threshold: ThresholdOpt = None,
    max_tokens: Annotated[int | None, typer.Option(help="Max tokens of an action's or question's answer.")] = None,
    n_ctx: NCtxOpt = None,
    n_threads: NThreadsOpt = None,
) -> None:
    """Serve editors over the Language Server Protocol: inline completion, code actions, katpilot.ask (docs/lsp.md)."""
    from lsp.server import run

    settings = config_mod.load_settings(
        _flags(
            model=model,
            think=think,
            budget=budget,
            threshold=threshold,
            max_tokens=max_tokens,
            n_ctx=n_ctx,
            n_threads=n_threads,
        )
    ).settings
    run(settings, _tcp_address(tcp) if tcp is not None else None)


def _tcp_address(value: str) -> tuple[str, int]:
    """`PORT` or `HOST:PORT` (loopback when no host is given)."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise KatpilotError(f"--tcp takes [HOST:]PORT, not '{value}'", "e.g. --tcp 2087 or --tcp 127.0.0.1:2087")
    return host.strip("[]") or "127.0.0.1", int(port)


@app.command("history")
def history_command(
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many chats to list.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List saved chats, most recent first (resume one with `katpilot chat --resume ID`)."""
    import time
    from dataclasses import asdict

    from katpilot.history import History

    with History() as store:
        for notice in store.notices:
            typer.echo(f"katpilot: {notice}", err=True)
        chats = store.chats(limit)
    if as_json:
        typer.echo(json.dumps([asdict(chat) for chat in chats]))
        return
    if not chats:
        typer.echo("no chats yet (start one with `katpilot chat`)")
        return
    for chat in chats:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.updated_at))
        typer.echo(f"{chat.id:>5}  {when}  {chat.messages:>4} msgs  {chat.model:<16}  {chat.title or '(untitled)'}")


@app.command("eval")
def eval_command(
    suite: Annotated[
        str, typer.Option("--suite", help="arithmetic, code, repo, or a HumanEval / MBPP / GSM8K .jsonl file.")
    ],
    model: ModelOpt = None,
    think: Annotated[
        str, typer.Option("--think", help="Modes to run, comma-separated: auto, on, off.")
    ] = "auto,on,off",
    thresholds: Annotated[
        str | None, typer.Option(help="think=auto sweep: start:stop:step (0:1:0.1) or a list (0.3,0.5).")
    ] = None,
    budget: BudgetOpt = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N items only.")] = None,
    jobs: Annotated[
        int,
        typer.Option(help="Items at once: connections to a server, or local llama.cpp engines sharing the threads."),
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory; rerun with the same one to resume. \\[default: katpilot-eval/SUITE-MODEL]"
        ),
    ] = None,
    repo: Annotated[Path | None, typer.Option(help="Repository for --suite repo. \\[default: .]")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated suites (arithmetic, repo).")] = 0,
    profile: ProfileOpt = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; eval is greedy by default.")] = 0.0,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    n_ctx: NCtxOpt = None,
    n_threads: NThreadsOpt = None,
    threshold: ThresholdOpt = None,
    plot: Annotated[bool, typer.Option(help="Write plot.png and plot.svg.")] = True,
) -> None:
    """Measure accuracy against tokens per think mode, sweep the judge threshold; writes report.md, results.json, plot."""
    from katpilot.eval.command import EvalOptions, parse_modes, parse_thresholds, run_eval, summary_lines

    settings = config_mod.load_settings(
        _flags(
            model=model,
            profile=profile,
            budget=budget,
            threshold=threshold,
            temperature=temperature,
            max_tokens=max_tokens,
            n_ctx=n_ctx,
            n_threads=n_threads,
        )
    ).settings
    options = EvalOptions(
        suite=suite,
        modes=parse_modes(think),
        thresholds=parse_thresholds(thresholds) if thresholds is not None else None,
        limit=limit,
        jobs=jobs,
        out=out,
        seed=seed,
        repo=repo,
        plot=plot,
    )
    results, out_dir = run_eval(settings, options, show_progress=sys.stderr.isatty())
    for line in summary_lines(results, out_dir):
        typer.echo(line)


@train_app.command("data")
def train_data(
    repo: Annotated[Path | None, typer.Argument(help="The repository to mine tasks from.")] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="The teacher: a GGUF, a model name, a server URL, or 'programmatic' (arithmetic only)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Dataset directory; rerun with the same one to resume.")] = Path(
        "katpilot-data"
    ),
    tasks: Annotated[
        str,
        typer.Option(
            "--tasks",
            help="Kinds: complete, fix, docstring, explain, question (or 'repo'), arithmetic, code, prompt, 'all'.",
        ),
    ] = "repo",
    votes: Annotated[int, typer.Option(help="Answers per mode and task (K).")] = 2,
    limit: Annotated[int | None, typer.Option(help="The first N tasks only (kinds interleaved).")] = None,
    drill: Annotated[int, typer.Option(help="Add N arithmetic problems answered directly (practice).")] = 0,
    drill_levels: Annotated[str, typer.Option(help="The drill's operation counts, taken in turn: 1,2.")] = "1",
    jobs: Annotated[
        int, typer.Option(help="Workers at once: server connections, or local llama.cpp engines sharing the threads.")
    ] = 1,
    prompts: Annotated[Path | None, typer.Option(help="Your own prompts: JSONL with prompt (and answer).")] = None,
    critic: Annotated[str, typer.Option(help="'teacher' (the same model), 'none', or another model.")] = "teacher",
    margin: Annotated[
        float, typer.Option(help="Think-off wins when its pass rate is within this of think-on's.")
    ] = 0.1,
    random_share: Annotated[float, typer.Option(help="Share of tasks given a random mode.")] = 0.01,
    intent_share: Annotated[float, typer.Option(help="Share of tasks that also get an explicit-intent record.")] = 0.1,
    retries: Annotated[int, typer.Option(help="Fresh think-on attempts after the critic rejects all.")] = 2,
    span: Annotated[int, typer.Option(help="Operations the programmatic teacher answers directly.")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    temperature: Annotated[float | None, typer.Option(help="Teacher sampling temperature (votes need > 0).")] = None,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    n_ctx: NCtxOpt = None,
    n_threads: NThreadsOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Build a dual-regime (think-on / think-off) dataset from a repository, tagged by pass rates."""
    from trainer.data.builder import DataOptions
    from trainer.data.command import DataRun, run_data, summary_lines
    from trainer.data.sources import parse_kinds, parse_levels

    settings = config_mod.load_settings(
        _flags(temperature=temperature, max_tokens=max_tokens, n_ctx=n_ctx, n_threads=n_threads, profile=profile)
    ).settings
    options = DataOptions(
        votes=votes, margin=margin, random_share=random_share, intent_share=intent_share, retries=retries, seed=seed
    )
    run = DataRun(
        out=out,
        kinds=parse_kinds(tasks),
        repo=repo,
        teacher=teacher,
        critic=critic,
        prompts=prompts,
        limit=limit,
        drill=drill,
        drill_levels=parse_levels(drill_levels),
        jobs=jobs,
        span=span,
        options=options,
    )
    summary = run_data(settings, run, show_progress=sys.stderr.isatty())
    for line in summary_lines(summary):
        typer.echo(line)


@train_app.command("run")
def train_run(
    recipe: Annotated[
        Path,
        typer.Argument(
            help="A recipe TOML: \\[run], then any of \\[data] \\[distill] \\[sft] \\[rl] \\[quant] \\[eval]."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option(help="Where the stages' run directories go (default: \\[run] out).")
    ] = None,
) -> None:
    """Run a whole recipe: its stages in order, chained, each resumable and skipped once done."""
    from trainer.recipe import run_recipe

    settings = config_mod.load_settings().settings
    result = run_recipe(recipe, settings, echo=lambda line: typer.echo(line, err=True), out=out)
    for stage in result.stages:
        state = "skipped (done before)" if stage.skipped else f"{stage.seconds:.0f} s"
        typer.echo(f"{stage.name:8} {state:>22}  {stage.summary}  -> {stage.out}")
    typer.echo(f"total {sum(s.seconds for s in result.stages):.0f} s")
    if result.evaluation is not None:
        from trainer.recipe_report import autothink_figures, figure_lines

        figures = autothink_figures(result.evaluation.results)
        for line in figure_lines(figures) if figures else []:
            typer.echo(line)
    if result.report is not None:
        typer.echo(f"report: {result.report}")


@train_app.command("sft")
def train_sft(
    out: Annotated[Path, typer.Option(help="Run directory; rerun with the same one to resume.")],
    model: Annotated[str | None, typer.Option(help="Student: a checkpoint directory, a GGUF, or a model name.")] = None,
    data: Annotated[str | None, typer.Option(help="A `train data` directory or a JSONL file of chats.")] = None,
    recipe: Annotated[Path | None, typer.Option(help="A recipe TOML; its \\[sft] table sets defaults.")] = None,
    method: Annotated[str | None, typer.Option(help="lora or full.")] = None,
    lora_rank: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Default: 2e-4 (LoRA), 5e-5 (full).")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N steps (overrides epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    grad_accum: Annotated[int | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per record; longer ones are skipped.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    save_steps: Annotated[int | None, typer.Option()] = None,
    merge: Annotated[bool | None, typer.Option("--merge/--no-merge", help="LoRA: also write the merged model.")] = None,
    forced_share: Annotated[
        float | None, typer.Option(help="Share of records also trained from the mode tag on, as --think forces.")
    ] = None,
) -> None:
    """Cold-start AutoThink SFT: teach the format and a first mode prior (LoRA or full; resumable)."""
    from trainer.config import resolve
    from trainer.sft import run_sft

    flags = {
        "model": model, "data": data, "method": method, "lora_rank": lora_rank, "learning_rate": learning_rate,
        "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "grad_accum": grad_accum,
        "max_length": max_length, "seed": seed, "save_steps": save_steps, "merge": merge,
        "forced_share": forced_share,
    }  # fmt: skip
    result = run_sft(resolve(recipe, "sft", flags), out)
    state = "resumed and finished" if result.resumed else "finished"
    typer.echo(f"{state}: {result.steps} steps on {result.records} records ({result.skipped} skipped as too long)")
    typer.echo(f"final model: {result.final}")
    typer.echo(f"report: {out / 'report.md'}")


@train_app.command("distill")
def train_distill(
    out: Annotated[Path, typer.Option(help="Run directory; rerun with the same one to resume.")],
    model: Annotated[str | None, typer.Option(help="Student: a checkpoint directory, a GGUF, or a model name.")] = None,
    teacher: Annotated[
        str | None, typer.Option(help="A GGUF or model name (llama.cpp, cached) or a Hugging Face directory.")
    ] = None,
    data: Annotated[str | None, typer.Option(help="A `train data` directory or a JSONL file of chats.")] = None,
    repo: Annotated[str | None, typer.Option(help="Also train on this repository's text (with FIM).")] = None,
    recipe: Annotated[Path | None, typer.Option(help="A recipe TOML; its \\[distill] table sets defaults.")] = None,
    teacher_mode: Annotated[str | None, typer.Option(help="cache (default) or live (a Hugging Face teacher).")] = None,
    divergence: Annotated[str | None, typer.Option(help="uld (any tokenizers), kl or jsd (same tokenizer).")] = None,
    uld_weight: Annotated[float | None, typer.Option(help="lambda in CE + lambda * ULD (default 1.5).")] = None,
    mtp_depth: Annotated[int | None, typer.Option(help="MTP modules (default 1; 0: none).")] = None,
    fim_rate: Annotated[float | None, typer.Option(help="Share of repository windows as fill-in-the-middle.")] = None,
    method: Annotated[str | None, typer.Option(help="lora or full.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Default: 2e-4 (LoRA), 5e-5 (full).")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N steps (overrides epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per example; longer ones are skipped.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Distil a teacher into the student (ULD across tokenizers + MTP), on chats and the team's code."""
    from trainer.config import DistillConfig, resolve
    from trainer.distill import run_distill

    flags = {
        "model": model, "teacher": teacher, "data": data, "repo": repo, "teacher_mode": teacher_mode,
        "divergence": divergence, "uld_weight": uld_weight, "mtp_depth": mtp_depth, "fim_rate": fim_rate,
        "method": method, "learning_rate": learning_rate, "epochs": epochs, "max_steps": max_steps,
        "batch_size": batch_size, "max_length": max_length, "seed": seed,
    }  # fmt: skip
    settings = config_mod.load_settings().settings
    resolved = resolve(recipe, "distill", flags, schema=DistillConfig)
    result = run_distill(resolved, out, settings=settings, echo=lambda line: typer.echo(line, err=True))
    state = "resumed and finished" if result.resumed else "finished"
    typer.echo(f"{state}: {result.steps} steps on {result.examples} examples ({result.skipped} skipped as too long)")
    typer.echo(f"final model: {result.final}")
    typer.echo(f"report: {out / 'report.md'}")


@train_app.command("rl")
def train_rl(
    out: Annotated[Path, typer.Option(help="Run directory; rerun with the same one to resume.")],
    model: Annotated[
        str | None, typer.Option(help="Policy: the cold-start SFT's final model (or any checkpoint).")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="A `train data` directory, or an eval suite (arithmetic, code, a JSONL file).")
    ] = None,
    recipe: Annotated[Path | None, typer.Option(help="A recipe TOML; its \\[rl] table sets defaults.")] = None,
    generations: Annotated[int | None, typer.Option(help="Rollouts per prompt (G).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Longest rollout, in tokens.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature of the rollouts.")] = None,
    loss_type: Annotated[str | None, typer.Option(help="grpo, bnpo, dr_grpo or dapo (TRL's meanings).")] = None,
    beta: Annotated[float | None, typer.Option(help="KL weight to the reference (default 0).")] = None,
    judge_reward: Annotated[
        bool | None, typer.Option("--judge-reward/--no-judge-reward", help="Reward the mode decision on its own.")
    ] = None,
    method: Annotated[str | None, typer.Option(help="lora or full.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Default: 1e-5 (LoRA), 1e-6 (full).")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N steps (overrides epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Prompts per step.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    merge: Annotated[bool | None, typer.Option("--merge/--no-merge", help="LoRA: also write the merged model.")] = None,
    rollouts: Annotated[
        str | None, typer.Option(help="auto, transformers or llama.cpp (LoRA on CPU: the adapter exported each step).")
    ] = None,
) -> None:
    """Step-SRPO: teach the policy when to think (judge reward) and to answer right (answer reward)."""
    from trainer.config import RLConfig, resolve
    from trainer.rl.train import run_rl

    flags = {
        "model": model, "data": data, "generations": generations, "max_new_tokens": max_new_tokens,
        "temperature": temperature, "loss_type": loss_type, "beta": beta, "judge_reward": judge_reward,
        "method": method, "learning_rate": learning_rate, "epochs": epochs, "max_steps": max_steps,
        "batch_size": batch_size, "seed": seed, "merge": merge, "rollouts": rollouts,
    }  # fmt: skip
    result = run_rl(resolve(recipe, "rl", flags, schema=RLConfig), out)
    state = "resumed and finished" if result.resumed else "finished"
    typer.echo(f"{state}: {result.steps} steps on {result.prompts} prompts ({result.skipped} skipped)")
    typer.echo(f"final model: {result.final}")
    typer.echo(f"report: {out / 'report.md'}")


@quant_app.command("quantize")
def quant_quantize(
    source: Annotated[Path, typer.Argument(help="The GGUF to quantize (best: an f16 or f32 export).")],
    output: Annotated[Path, typer.Argument(help="Where to write the result (written whole, or not at all).")],
    type_name: Annotated[
        str, typer.Argument(metavar="TYPE", help="q8_0, q6_k, q5_k_m, q4_k_m, f16, ... (see docs/quant.md).")
    ],
    threads: Annotated[int | None, typer.Option(help="Threads; default: all.")] = None,
    imatrix: Annotated[
        Path | None, typer.Option(help="An importance matrix file (llama.cpp's imatrix GGUF, or katpilot's).")
    ] = None,
) -> None:
    """Quantize a GGUF to another type; says which tensors fell back to another type, and why."""
    from quant.imatrix import load_imatrix
    from quant.quantize import quantize

    matrix = load_imatrix(imatrix) if imatrix is not None else None

    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # The bar keeps the real stderr: sys.stderr is llama.cpp's log collector while the quantizer runs.
        console = Console(file=sys.stderr)
        columns = (TextColumn(f"quantizing to {type_name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("quantize", total=None)
            report = quantize(
                source,
                output,
                type_name,
                threads=threads,
                progress=lambda d, t: bar.update(task, completed=d, total=t),
                imatrix=matrix,
            )
    else:
        report = quantize(source, output, type_name, threads=threads, imatrix=matrix)
    for notice in report.notices:
        typer.echo(f"katpilot: {notice}", err=True)
    mib = 2**20
    typer.echo(
        f"wrote {report.output} ({report.type}, {report.output_bytes / mib:.1f} MiB from {report.input_bytes / mib:.1f} MiB"
        f" in {report.seconds:.1f} s)"
    )


@quant_app.command("export")
def quant_export(
    checkpoint: Annotated[
        Path, typer.Argument(help="A Hugging Face checkpoint directory, or a PEFT LoRA adapter directory.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The GGUF to write (written whole, or not at all).")],
    type_name: Annotated[str, typer.Option("--type", help="f32, f16, bf16, q8_0, q6_k, q5_k_m, q4_k_m, ...")] = "f16",
    lora: Annotated[Path | None, typer.Option(help="A LoRA adapter to merge into the checkpoint.")] = None,
    base: Annotated[
        Path | None,
        typer.Option(help="For an adapter: its base checkpoint (default: the adapter's base_model_name_or_path)."),
    ] = None,
    merge: Annotated[
        bool, typer.Option(help="For an adapter: merge it into its base instead of exporting it alone.")
    ] = False,
    imatrix: Annotated[
        str, typer.Option(help="auto (computed from --calibration when the type uses one), a file, or none.")
    ] = "auto",
    calibration: Annotated[
        Path, typer.Option(help="The repository the importance matrix is measured on (secrets withheld).")
    ] = Path("."),
    threads: Annotated[int | None, typer.Option(help="Quantizer threads; default: all.")] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The model's name in the GGUF (default: the directory's; for a run's final/, the file's)."),
    ] = None,
) -> None:
    """Export a checkpoint (with its MTP heads, or merged with a LoRA) or a LoRA adapter to GGUF."""
    from quant.imatrix import imatrix_for_export
    from quant.lora import adapter_base, export_adapter

    if (checkpoint / "adapter_config.json").is_file():
        base_dir = base or adapter_base(checkpoint)
        if not merge:
            pairs = export_adapter(checkpoint, base_dir, out, type_name)
            typer.echo(
                f"wrote {out} (LoRA adapter, {pairs} layers, {type_name}); load it over {base_dir.name}'s export"
            )
            return
        checkpoint, lora = base_dir, checkpoint

    def work(progress: Callable[[str, int, int], None] | None) -> Any:
        measured = (lambda done, total: progress("importance matrix", done, total)) if progress else None

        def matrix() -> Any:  # called by the export once the checkpoint has passed its checks
            found, notice = imatrix_for_export(imatrix, checkpoint, type_name.lower(), calibration, measured)
            if notice:
                typer.echo(f"katpilot: {notice}", err=True)
            return found

        return _export(
            checkpoint, out, type_name, lora=lora, imatrix=matrix, threads=threads, progress=progress, name=name
        )

    report = _with_bar("export", work)
    for notice in report.notices:
        typer.echo(f"katpilot: {notice}", err=True)
    extra = f", MTP heads: {report.companion} ({report.mtp_heads})" if report.companion else ""
    merged = f", merged {report.merged_lora}" if report.merged_lora else ""
    merged += f", importance matrix for {report.imatrix_entries} tensors" if report.imatrix_entries else ""
    typer.echo(
        f"wrote {report.output} ({report.architecture}, {report.type}, {report.tensors} tensors, "
        f"{report.output_bytes / 2**20:.1f} MiB, pre-tokenizer {report.pre_tokenizer}{merged}{extra}) in {report.seconds:.1f} s"
    )


def _export(checkpoint: Path, out: Path, type_name: str, **kwargs: Any) -> Any:
    from quant.export import export_checkpoint

    return export_checkpoint(checkpoint, out, type_name, **kwargs)


def _with_bar(label: str, work: Callable[[Callable[[str, int, int], None] | None], Any]) -> Any:
    """Run `work(progress)` with a byte/tensor progress bar per phase on a terminal, none otherwise."""
    if not sys.stderr.isatty():
        return work(None)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    ) as bar:

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        return work(progress)


@quant_app.command("check")
def quant_check(
    model: Annotated[Path, typer.Argument(help="The GGUF to check.")],
    against: Annotated[Path, typer.Option("--against", help="The checkpoint it was exported from.")],
) -> None:
    """Compare a GGUF with its checkpoint: hyperparameters, every tensor, the tokenizer."""
    from quant.check import check_export

    report = check_export(model, against)
    for line in report.lines:
        typer.echo(f"ok  {line}")
    for line in report.failures:
        typer.echo(f"BAD {line}")
    if not report.ok:
        raise typer.Exit(2)


RepoArg = Annotated[Path, typer.Argument(help="The repository's root directory.")]
ExcludeOpt = Annotated[
    list[str] | None, typer.Option("--exclude", help="Extra ignore pattern (.gitignore syntax); repeatable.")
]


def _refresh_index(path: Path, exclude: list[str] | None, show_progress: bool) -> tuple[RepoIndex, RefreshReport]:
    """Open the repository's index and bring it up to date, with a progress bar on a terminal."""
    from katpilot.index import RepoIndex

    index = RepoIndex(path, exclude=exclude or ())
    if not (show_progress and sys.stderr.isatty()):
        return index, index.refresh()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("parsing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # Redrawn at each step, not by rich's refresh thread: a process with a second thread spawns
    # the index's workers instead of forking them (see katpilot/index/build.py).
    with Progress(*columns, console=Console(stderr=True), transient=True, auto_refresh=False) as bar:
        task = bar.add_task("parse", total=None)
        report = index.refresh(lambda done, total: bar.update(task, completed=done, total=total, refresh=True))
    return index, report


@app.command("index")
def index_command(
    path: RepoArg = Path("."),
    exclude: ExcludeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Build or refresh the repository index (tree-sitter definitions, references; secrets withheld)."""
    from dataclasses import asdict

    index, report = _refresh_index(path, exclude, show_progress=not as_json)
    index.close()
    for notice in report.notices:
        typer.echo(f"katpilot: {notice}", err=True)
    if as_json:
        typer.echo(json.dumps(asdict(report)))
    else:
        typer.echo(f"indexed {index.root}: {report.summary()}")
        typer.echo(f"cache: {report.cache_path}")


@app.command("map")
def map_command(
    path: RepoArg = Path("."),
    tokens: Annotated[
        int, typer.Option("--tokens", min=1, help="Token budget (estimated at 3 characters per token).")
    ] = 1024,
    focus: Annotated[
        list[str] | None, typer.Option("--focus", help="A file (or symbol name) to rank toward; repeatable.")
    ] = None,
    exclude: ExcludeOpt = None,
) -> None:
    """Print the ranked repo map: the definitions the repository leans on most, within a token budget."""
    index, report = _refresh_index(path, exclude, show_progress=True)
    with index:
        for notice in report.notices:
            typer.echo(f"katpilot: {notice}", err=True)
        files, names = index.resolve_focus(focus or [])
        typer.echo(index.repo_map(tokens, focus_files=files, focus_names=names), nl=False)


def main() -> None:
    """Console entry point: run the app and turn errors into one line."""
    try:
        app()
    except KatpilotError as exc:
        _fail(f"katpilot: error: {exc.one_line()}", exc.exit_code)
    except KeyboardInterrupt:
        _fail("katpilot: interrupted", 130)
    except BrokenPipeError:
        os._exit(0)  # the reader went away (`katpilot ask ... | head`): nothing left to say
    except Exception as exc:
        if os.environ.get("KATPILOT_DEBUG"):
            raise
        _fail(f"katpilot: internal error: {type(exc).__name__}: {exc} (set KATPILOT_DEBUG=1 for details)", 1)


def _fail(line: str, code: int) -> None:
    sys.stdout.flush()
    print(" ".join(line.split()), file=sys.stderr)
    raise SystemExit(code)
