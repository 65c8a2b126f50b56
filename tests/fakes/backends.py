"""The FakeBackend ImageGate's tests script through the prompt; it lives in imagegate.testing for backend authors."""

from imagegate.testing import SECRET_IN_ERROR, FakeBackend, tiny_png

__all__ = ["SECRET_IN_ERROR", "FakeBackend", "tiny_png"]
