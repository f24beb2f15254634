"""The Gradio app: layout, per-visitor session, event handlers and the pure views they render. The only package
that imports gradio.
"""
