"""Programmatic `alembic upgrade head`: the migrations ship inside the package (`app/migrations`).

They are found with `importlib.resources`, so an installed wheel migrates exactly like the
checkout; `alembic` on the command line keeps working from the checkout via `alembic.ini`.
"""

from __future__ import annotations

import os
from importlib.resources import as_file, files

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str, script_location: str) -> Config:
    """Alembic config for our migrations at `script_location` and `database_url`."""
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["database_url"] = database_url
    return cfg


def _ensure_sqlite_directory(database_url: str) -> None:
    if database_url.startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1].split("?", 1)[0]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def run_alembic(database_url: str, action: str = "upgrade", revision: str = "head") -> None:
    """Run an alembic command (`upgrade`, `check`, `downgrade`) on the packaged migrations."""
    _ensure_sqlite_directory(database_url)
    with as_file(files("app") / "migrations") as location:
        cfg = alembic_config(database_url, str(location))
        if action == "check":
            command.check(cfg)
        else:
            getattr(command, action)(cfg, revision)


def upgrade_to_head(database_url: str) -> None:
    """Apply every migration (creates the SQLite directory if needed)."""
    run_alembic(database_url, "upgrade", "head")
