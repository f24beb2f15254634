"""GGUF files read and written with the gguf package, never llama.cpp: metadata and validation, tensor writing,
tiny test models.
"""
