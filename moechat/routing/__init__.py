"""Router probabilities and the statistics over them: pure numpy, no model, no UI."""
