"""moechat: chat with a Mixture-of-Experts model and see what the experts do."""

__version__ = "0.1.0"
