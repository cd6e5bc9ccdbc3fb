"""Starting local worlds for tests, each on a database of its own, and stopping them all."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sandbox.chain import BLOCK_TIME_SECONDS, rpc_call
from sandbox.world import World


class WorldMaker:
    """Starts worlds, each on a fresh database unless told which, and stops all it started."""

    def __init__(self, new_database: Callable[[], str]) -> None:
        self._new_database = new_database
        self._started: list[World] = []

    def __call__(
        self,
        gateways: int = 1,
        remote_facilitator: bool = False,
        job_delay_s: float = 1.0,
        database_url: str | None = None,
        **gateway_env: str,
    ) -> World:
        """A started world; `database_url=""` is the gateway's SQLite default."""
        world = World(
            database_url=self._new_database() if database_url is None else database_url,
            job_delay_s=job_delay_s,
            remote_facilitator=remote_facilitator,
            gateway_env=gateway_env,
        )
        self._started.append(world.start(gateways=gateways))
        return world

    def stop_all(self) -> None:
        """Stop every world started here, newest first."""
        while self._started:
            self._started.pop().stop()


def pause_mining(world: World) -> None:
    """Stop mining: a broadcast transaction stays pending (a slow confirmation)."""
    rpc_call(world.rpc_url, "evm_setAutomine", [False])
    rpc_call(world.rpc_url, "evm_setIntervalMining", [0])


def resume_mining(world: World) -> None:
    """Mine what is pending and go back to the chain's normal mining."""
    rpc_call(world.rpc_url, "evm_setAutomine", [True])
    rpc_call(world.rpc_url, "evm_setIntervalMining", [BLOCK_TIME_SECONDS])
    rpc_call(world.rpc_url, "evm_mine", [])


def fault_free(
    world: World, *, upstream: bool = True, facilitator: bool = False, mining: bool = False
) -> Iterator[World]:
    """`world` for one test, its faults cleared before and after (and normal mining after)."""

    def reset() -> None:
        if facilitator:
            world.reset_facilitator()
        if upstream:
            world.reset_upstream()

    reset()
    try:
        yield world
    finally:
        if mining:
            resume_mining(world)
        reset()
