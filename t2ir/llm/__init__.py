"""LLM export: a local Hugging Face model folder to a tract-ready package (`t2ir export-llm`)."""
