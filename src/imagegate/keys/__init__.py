"""API keys: issue, verify, disable, delete."""
