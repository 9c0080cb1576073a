"""Helpers for demos, tests and benchmarks: an embedded redis-server and a provider emulator."""
