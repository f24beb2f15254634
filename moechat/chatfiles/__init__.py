"""Chat files of other apps: SillyTavern JSONL, text-generation-webui JSON, Markdown export."""
