"""Our jobs: the paid-request state machine, its persistence and the money ledger."""
