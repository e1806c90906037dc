"""The console scripts: each imports its command only when it runs.

Render processes are started with multiprocessing's "spawn", which runs the script that
started the parent again in every child (as `__mp_main__`, without calling its main). The
scripts import this module alone, so a render process does not import the commands it
never runs (aiohttp, shapely, pyproj, the config validation...): it starts sooner and
holds less memory. `python -m tileserver` needs no such care (spawn skips `__main__`
modules).
"""

from __future__ import annotations

import gc


def tileserver() -> int:
    """`tileserver`: serve, check-config, generate, controller."""
    from tileserver.cli.main import main

    return main()


def generate_tiles() -> int:
    """`generate_tiles`, TileCloud-chain's command."""
    # No collection while the command imports its modules and loads the configuration
    # (about a tenth of its start-up's CPU): `generate.run` freezes what they made and
    # turns the collector on again (benchmarks/RESULTS.md, issue 15, phase 6).
    gc.disable()
    try:
        from tileserver.cli.generate import main

        return main()
    finally:
        gc.enable()


def generate_controller() -> int:
    """`generate_controller`, TileCloud-chain's command."""
    from tileserver.cli.controller import main

    return main()


def generate_cost() -> int:
    """`generate_cost`, TileCloud-chain's command: generate_controller --cost."""
    from tileserver.cli.controller import cost_main

    return cost_main()
