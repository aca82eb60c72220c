"""`katpilot lsp`: the language server editors talk to (inline completion, code actions, katpilot.ask)."""
