"""`make sandbox` starts from a fresh database each time, as its chain is fresh too."""

from __future__ import annotations

from pathlib import Path

from sandbox.__main__ import fresh_database


def test_each_sandbox_run_drops_the_previous_database(tmp_path: Path) -> None:
    for name in ("x402-reseller.db", "x402-reseller.db-wal", "x402-reseller.db-shm"):
        (tmp_path / name).write_bytes(b"jobs and ledger rows of the last run")
    keep = tmp_path / "notes.txt"
    keep.write_text("not the sandbox's")
    url = fresh_database(tmp_path)
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'x402-reseller.db'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_first_run_has_nothing_to_drop(tmp_path: Path) -> None:
    assert fresh_database(tmp_path / "new").endswith("/new/x402-reseller.db")
