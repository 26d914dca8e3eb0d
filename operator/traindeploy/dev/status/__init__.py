"""Child status as the upstream controllers write it, one module per controller; pure builders
shared by the dev executors and the test stand-ins (tests/e2e/players.py)."""
