"""Building and examining Mixture-of-Experts models: the frankenMoE builder, its gates and sources, provenance,
steering and fidelity.
"""
