"""API keys: a team's members pay with a budget instead of an x402 payment."""
