"""Real servers the tests and the benchmark run against (not part of the service)."""
