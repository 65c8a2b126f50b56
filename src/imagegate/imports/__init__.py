"""Bringing an existing installation of another service over to ImageGate."""
