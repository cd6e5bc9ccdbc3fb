"""Why a key cannot pay: not a usable key (401), or its budget is spent (402).

AppError
 └── Unauthorized (401)
      └── InvalidApiKey          missing, unknown, revoked or expired key
BudgetExhausted                  not an AppError: the route answers it with a 402 that also
                                 carries the x402 payment requirements (pay instead)
"""

from __future__ import annotations

from typing import Any

from app.core.errors import Unauthorized

INVALID_API_KEY = "invalid_api_key"
BUDGET_EXHAUSTED = "budget_exhausted"


class InvalidApiKey(Unauthorized):
    """The bearer is not a key that may pay now. The message never says which case it is
    beyond revoked/expired (the key's owner knows its key), and never echoes the key."""

    code = INVALID_API_KEY

    def __init__(self, message: str = "a valid API key is required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="x402-reseller"'})


class BudgetExhausted(Exception):
    """The key's total or daily budget has no room for this request; nothing was debited."""

    def __init__(self, which: str, remaining: dict[str, Any]) -> None:
        super().__init__(f"the API key's {which} budget is exhausted")
        self.which = which  # "total" | "daily"
        self.remaining = remaining

    @property
    def message(self) -> str:
        """A sentence for the caller."""
        return f"{self.args[0]}; pay with x402 instead, or ask the operator for a top-up"

    def details(self) -> dict[str, Any]:
        """What is left (atomic units as strings, null: no such budget)."""
        return {"budget": self.which, **self.remaining}
