"""Developer tools run with `python -m t2ir.tools.<name>`."""
