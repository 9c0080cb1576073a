"""Public task API that web apps import."""
