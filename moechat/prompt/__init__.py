"""Prompt assembly: instruct formats, the order of a chat prompt, and the token budget."""
