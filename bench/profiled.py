"""Run a module under cProfile with a CPU-time clock (time.process_time), so the time a
service spends idle in its event loop's poll does not drown out where its CPU goes.

    python -m bench.profiled OUT.prof module [args…]

Stats are written when the module returns or exits (the services exit on SIGTERM).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
