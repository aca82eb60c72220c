"""`katpilot lsp` driven by a real editor: Neovim's built-in LSP client, headless, on the embedded model.

The other LSP tests use pygls' client, which sends exactly what the tests tell it to. Neovim sends
what an editor sends: its own capabilities, `didOpen` with its language id, its JSON encoding of
empty tables, utf-16 positions. The Lua script below starts the server the way a user's config
does, asks for a completion and the code actions, resolves "katpilot: Fix" (Neovim advertises
resolveSupport for "edit"; without it the action would carry the katpilot.applyAction command),
applies the edit to the buffer, and writes every result as JSON for the asserts here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lsp_helpers import CALC_PY

NVIM_TIMEOUT_S = 180

COMPLETION_AT = (12, 4)  # the empty body of square()
ACTION_AT = (6, 8)  # inside mean(), which spans lines 4..8
MEAN_LINES = (4, 8)
TITLES = {"katpilot: Explain", "katpilot: Fix", "katpilot: Add docstring", "katpilot: Write tests"}

LUA = r"""
local python, root, file, out = __PYTHON__, __ROOT__, __FILE__, __OUT__
local results = {steps = {}}

local function step(name) table.insert(results.steps, name) end

-- buf_request_sync answers {[client_id] = {result = ..., error/err = ...}}; keep our client's.
local function request(bufnr, client_id, method, params, timeout_ms)
  local answers, err = vim.lsp.buf_request_sync(bufnr, method, params, timeout_ms)
  if not answers then error(method .. ': ' .. tostring(err)) end
  local answer = answers[client_id]
  if not answer then error(method .. ': no answer from the katpilot client') end
  local failure = answer.error or answer.err
  if failure then error(method .. ': ' .. vim.inspect(failure)) end
  return answer.result
end

local function run()
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  results.resolve_support = vim.tbl_get and vim.tbl_get(capabilities, 'textDocument', 'codeAction', 'resolveSupport')
    or (capabilities.textDocument.codeAction or {}).resolveSupport
  local client_id = vim.lsp.start_client({
    name = 'katpilot',
    cmd = {python, '-m', 'katpilot', 'lsp'},
    cmd_cwd = root,
    root_dir = root,
    init_options = {debounce_ms = 0, completion_max_tokens = 24, max_tokens = 96},
  })
  if not client_id then error('vim.lsp.start_client failed') end
  step('started')

  vim.cmd('edit ' .. vim.fn.fnameescape(file))
  local bufnr = vim.api.nvim_get_current_buf()
  vim.bo[bufnr].filetype = 'python'
  vim.lsp.buf_attach_client(bufnr, client_id)
  local ready = vim.wait(60000, function()
    local client = vim.lsp.get_client_by_id(client_id)
    return client ~= nil and client.initialized == true
  end, 50)
  if not ready then error('the client did not initialize within 60 s') end
  step('initialized')
  local client = vim.lsp.get_client_by_id(client_id)
  local caps = client.server_capabilities or client.resolved_capabilities or {}
  results.server_capabilities = {
    code_action_resolve = type(caps.codeActionProvider) == 'table' and caps.codeActionProvider.resolveProvider or false,
    completion = caps.completionProvider ~= nil or caps.completion == true,
  }

  local uri = vim.uri_from_bufnr(bufnr)
  results.uri = uri
  local function at(pos) return {line = pos[1], character = pos[2]} end

  results.completion = request(bufnr, client_id, 'textDocument/completion',
    {textDocument = {uri = uri}, position = at(__COMPLETION_AT__)}, 60000)
  step('completion')

  local here = at(__ACTION_AT__)
  -- What vim.lsp.buf.code_action() sends: the line's diagnostics (none here), encoded by Neovim.
  local actions = request(bufnr, client_id, 'textDocument/codeAction', {
    textDocument = {uri = uri},
    range = {start = here, ['end'] = here},
    context = {diagnostics = vim.lsp.diagnostic.get_line_diagnostics(bufnr, here.line)},
  }, 30000)
  results.actions = actions
  step('codeAction')

  local fix
  for _, action in ipairs(actions or {}) do
    if action.title == 'katpilot: Fix' then fix = action end
  end
  if not fix then error('no "katpilot: Fix" action') end
  if fix.data ~= nil then
    results.fix = request(bufnr, client_id, 'codeAction/resolve', fix, 120000)
    step('resolve')
    vim.lsp.util.apply_workspace_edit(results.fix.edit, client.offset_encoding or 'utf-16')
  else
    -- No resolveSupport advertised: the command path, which sends workspace/applyEdit back to us.
    results.applied = request(bufnr, client_id, 'workspace/executeCommand',
      {command = fix.command.command, arguments = fix.command.arguments}, 120000)
    step('applyAction')
  end
  results.buffer = table.concat(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), '\n')
  step('done')
end

local ok, err = pcall(run)
if not ok then results.error = tostring(err) end
vim.fn.writefile({vim.fn.json_encode(results)}, out)
vim.cmd(ok and 'qa!' or 'cquit 1')
"""


def _installed_nvim() -> str | None:
    return shutil.which("nvim")


@pytest.fixture(scope="session")
def nvim() -> str:
    """The `nvim` executable; installed from Debian's `neovim` package when missing and we are root."""
    found = _installed_nvim()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip(
            "nvim is not installed, and it cannot be installed here (needs root and apt-get): apt-get install neovim"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "neovim"]
    log = []
    attempts = [[install], [[apt, "update", "-q"], install]]  # update only when the install fails
    for commands in attempts:
        for command in commands:
            try:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.append(f"$ {' '.join(command)} -> {exc}")
                continue
            log.append(f"$ {' '.join(command)} -> {done.returncode}\n{done.stderr[-2000:]}")
        found = _installed_nvim()
        if found:
            return found
    pytest.skip("nvim is not installed and `apt-get install neovim` failed:\n" + "\n".join(log))


def lua_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a valid Lua literal: LuaJIT has no \u escapes


def lua_pair(position: tuple[int, int]) -> str:
    """A (line, character) position as a Lua table literal: `{12, 4}`."""
    return "{" + ", ".join(str(n) for n in position) + "}"


def test_neovim_completion_code_actions_and_resolve(nvim: str, tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    source = root / "calc.py"
    source.write_text(CALC_PY)
    home = tmp_path / "home"
    for name in ("config", "data", "state", "cache"):
        (home / name).mkdir(parents=True)
    out = tmp_path / "results.json"
    script = tmp_path / "drive.lua"
    lua = (
        LUA.replace("__PYTHON__", lua_string(sys.executable))
        .replace("__ROOT__", lua_string(str(root)))
        .replace("__FILE__", lua_string(str(source)))
        .replace("__OUT__", lua_string(str(out)))
        .replace("__COMPLETION_AT__", lua_pair(COMPLETION_AT))
        .replace("__ACTION_AT__", lua_pair(ACTION_AT))
    )
    script.write_text(lua)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "KATPILOT_HOME": os.environ.get("KATPILOT_HOME", str(home / "katpilot")),
    }
    env.pop("VIMINIT", None)
    env.pop("NVIM_LISTEN_ADDRESS", None)
    command = [nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c", f"luafile {script}"]
    try:
        done = subprocess.run(
            command, cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=NVIM_TIMEOUT_S
        )
        output = f"nvim exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    except subprocess.TimeoutExpired as exc:
        output = f"nvim timed out after {NVIM_TIMEOUT_S} s\n{exc.stdout!r}\n{exc.stderr!r}"

    def report() -> str:
        # Neovim writes the server's stderr into its LSP log (under XDG_CACHE_HOME or XDG_STATE_HOME).
        logs = [p for p in home.rglob("lsp.log")]
        server = "\n".join(p.read_text(errors="replace")[-6000:] for p in logs) or "(no lsp.log)"
        return f"{output}\n--- results ---\n{out.read_text() if out.exists() else '(none)'}\n--- lsp.log ---\n{server}"

    assert out.exists(), report()
    results = json.loads(out.read_text())
    assert "error" not in results, report()
    assert results["steps"][-1] == "done", report()

    # Completion: one item carrying its text as a textEdit at the cursor.
    completion = results["completion"]
    items = completion["items"] if isinstance(completion, dict) else completion
    assert len(items) == 1, report()
    edit = items[0]["textEdit"]
    assert edit["newText"].strip(), report()
    assert edit["range"]["start"] == {"line": COMPLETION_AT[0], "character": COMPLETION_AT[1]}

    # Code actions on the enclosing function (empty range).
    titles = {action["title"] for action in results["actions"]}
    assert titles >= TITLES, report()

    uri = results["uri"]
    assert uri == source.as_uri()
    if results.get("resolve_support"):
        assert "edit" in results["resolve_support"]["properties"]
        fix = results["fix"]
        workspace_edit = fix["edit"]
        if workspace_edit.get("documentChanges"):
            (change,) = workspace_edit["documentChanges"]
            assert change["textDocument"]["uri"] == uri
            edits = change["edits"]
        else:
            assert list(workspace_edit["changes"]) == [uri], report()
            edits = workspace_edit["changes"][uri]
        (text_edit,) = edits
        assert text_edit["newText"].strip(), report()
        span = text_edit["range"]
        assert span["start"] == {"line": MEAN_LINES[0], "character": 0}, report()
        assert span["end"] == {"line": MEAN_LINES[1] + 1, "character": 0}, report()
        # Applied by Neovim: the lines before mean() are untouched, mean()'s lines are the new text.
        buffer = results["buffer"].split("\n")
        assert buffer[: MEAN_LINES[0]] == CALC_PY.split("\n")[: MEAN_LINES[0]]
        assert "\n".join(buffer).count(text_edit["newText"].rstrip("\n")) >= 1, report()
    else:
        assert results["applied"]["applied"] is True, report()
        assert results["buffer"] != CALC_PY.rstrip("\n"), report()
