"""Command line: `x402-reseller serve | migrate | check | keys | jobs | report`, readable
errors.

Every failure a operator can fix (a bad variable, an unreachable database) ends in one line
on stderr that names what failed and which variable to look at, and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pydantic import ValidationError

from app import __version__
from app.core.settings import Settings
from app.keys.cli import add_keys_parser, run_keys

CONFIG_ERROR = 2  # the configuration is wrong
UNREACHABLE = 3  # a dependency (database, facilitator, RPC, upstream) failed


def load_settings(env_file: str | None = ".env") -> Settings:
    """Settings from the environment (and `env_file` when it exists), or exit 2 naming each
    bad variable (never its value)."""
    source = env_file if env_file and Path(env_file).is_file() else None
    try:
        return Settings(_env_file=source)
    except ValidationError as exc:
        print("x402-reseller: invalid configuration:", file=sys.stderr)
        for err in exc.errors():
            loc = "_".join(str(p) for p in err["loc"]).upper()
            name = f"X402R_{loc}" if loc else "(settings)"
            message = "is required" if err["type"] == "missing" else err["msg"]
            print(f"  {name}: {message}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR) from None


def fail(what: str, variable: str, exc: BaseException) -> SystemExit:
    """One line for an operator: what failed, which variable to check, the error's kind."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    print(f"x402-reseller: {what} failed ({reason}); check {variable}", file=sys.stderr)
    return SystemExit(UNREACHABLE)


def _migrate(settings: Settings) -> None:
    from app.core.migrate import upgrade_to_head

    try:
        upgrade_to_head(settings.database_url)
    except Exception as exc:
        raise fail("database migration", "X402R_DATABASE_URL", exc) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="x402-reseller", description="Resell an x402-paid API at your own price."
    )
    parser.add_argument("--version", action="version", version=f"x402-reseller {__version__}")
    parser.add_argument(
        "--env-file",
        default=".env",
        help="read X402R_* variables from this file too, if it exists ('' for none; "
        "the environment wins over the file)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8402)
    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    sub.add_parser(
        "check", help="validate the configuration and reach every dependency; exit 1 on problems"
    )
    from app.operator.commands import add_commands

    add_commands(sub)
    add_keys_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = _parser().parse_args(argv)
    settings = load_settings(args.env_file or None)

    from app.core.logs import configure_logging

    configure_logging(settings)
    if args.command == "migrate":
        _migrate(settings)
        return
    if args.command == "keys":
        run_keys(args, settings)
        return
    if args.command == "check":
        from app.checks import run_checks

        raise SystemExit(asyncio.run(run_checks(settings)))
    if args.command in ("jobs", "report"):
        from app.operator.commands import run

        raise SystemExit(asyncio.run(run(settings, args)))

    from app.startup import serve

    serve(settings, host=args.host, port=args.port, migrate=_migrate)


if __name__ == "__main__":
    main()
