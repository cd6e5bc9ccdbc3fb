"""Fast money-path tests: a real gateway in-process, the outside world faked (no processes)."""
