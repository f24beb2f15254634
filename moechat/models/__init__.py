"""Where the model comes from and who holds it: model specs resolved to files, the embedded demo, the shared model
slot.
"""
