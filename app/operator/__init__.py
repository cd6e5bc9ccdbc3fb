"""Operator tools: job queries, money reports and actions on parked jobs (CLI and admin API)."""
