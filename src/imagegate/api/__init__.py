"""The HTTP surfaces: translators between an API shape and the job model."""
