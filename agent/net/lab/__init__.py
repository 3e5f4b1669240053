"""The kernel network lab (placeholder docstring)."""
