"""`katpilot train data`: a dual-regime (think-on / think-off) dataset from a team's repository.

Torch-free: teachers are models katpilot serves (through the session), verifiers are eval's.
"""
