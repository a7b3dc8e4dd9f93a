"""Candidate c: granian (ASGI, 1 worker, 1 runtime thread, uvloop, no access log) + raw ASGI + aiohttp.

Granian runs a supervisor process plus one worker process; run.py measures the whole process tree.
"""

from pathlib import Path

from common import port_from_argv
from granian import Granian
from granian.constants import Interfaces, Loops, RuntimeModes
from granian.log import LogLevels

if __name__ == "__main__":
    Granian(
        "asgi_aiohttp:app",
        address="127.0.0.1",
        port=port_from_argv(),
        interface=Interfaces.ASGI,
        workers=1,
        runtime_threads=1,
        runtime_mode=RuntimeModes.st,
        loop=Loops.uvloop,
        log_access=False,
        log_level=LogLevels.warning,
        working_dir=Path(__file__).resolve().parent,
    ).serve()
