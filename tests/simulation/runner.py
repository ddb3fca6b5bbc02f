"""Run one seed: build the loop and the world, patch the library, run, undo."""

from __future__ import annotations

from pathlib import Path

from payout_async.payouts import _orchestrator, _owner, _worker

from .clocks import Patches
from .loop import VirtualLoop
from .mutations import install
from .network import install_fence_clock
from .scenario import FAMILIES, Outcome
from .world import World

__all__ = ["run_seed"]


def run_seed(
    seed: int,
    *,
    family: str = "core",
    ledger: str = "memory",
    mutations: tuple[str, ...] = (),
    directory: Path | None = None,
) -> Outcome:
    """Run the simulation of ``seed`` and return what it found. ``ledger``:
    ``"memory"`` or ``"sqlite"`` (a file in ``directory``); ``mutations``: names from
    ``mutations.MUTATIONS`` to install."""
    loop = VirtualLoop()
    world = World(seed, FAMILIES[family], ledger, loop, directory)
    patches = Patches()
    try:
        patches.install(world.clocks, world.jitter_rng)
        install_fence_clock(patches, loop.time)
        for module in (_owner, _orchestrator, _worker):
            patches.set(module, "owner_is_dead", world.owner_is_dead)
        install(mutations, patches, world)
        loop.run_until_complete(world.main())
    finally:
        patches.undo()
        loop.close()
    return world.outcome(mutations)
