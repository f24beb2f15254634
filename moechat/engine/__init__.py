"""The llama.cpp adapter: load a GGUF, stream tokens with their routing, quantize. The only package that imports
llama_cpp or ctypes.
"""
