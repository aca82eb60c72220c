"""The terminal chat (`katpilot chat`)."""
