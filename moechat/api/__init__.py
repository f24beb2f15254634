"""The OpenAI-compatible HTTP API: request schemas and FastAPI routes."""
