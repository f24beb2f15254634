"""Shared fixtures. No test touches the network: the Hub is forced offline for the whole session."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
