"""Command line: `x402-reseller serve` and `x402-reseller migrate`, with readable config errors."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from app.core.settings import Settings


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 naming each bad variable (never its value)."""
    try:
        return Settings()
    except ValidationError as exc:
        print("x402-reseller: invalid configuration:", file=sys.stderr)
        for err in exc.errors():
            loc = "_".join(str(p) for p in err["loc"]).upper()
            name = f"X402R_{loc}" if loc else "(settings)"
            print(f"  {name}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="x402-reseller")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8402)
    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    args = parser.parse_args(argv)

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # Per-request client logs would print upstream and RPC URLs (which may embed API keys).
    for noisy in ("httpx", "httpcore", "web3", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "migrate":
        from app.core.migrate import upgrade_to_head

        upgrade_to_head(settings.database_url)
        return

    import uvicorn

    from app.main import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        # The client address is ours to derive (X402R_TRUSTED_PROXY_HOPS); uvicorn would
        # otherwise trust X-Forwarded-For from any peer on 127.0.0.1.
        proxy_headers=False,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
