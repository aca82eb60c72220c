"""`katpilot eval`: accuracy against tokens for any model, and the pieces the trainer reuses.

`sandbox` runs untrusted Python under limits; `verify` turns an answer into a pass/fail verdict.
"""
