"""What the driver programs share: named checks, the step in progress, and a main that turns
the outcome into one line and an exit code (0 when every check passed)."""
import asyncio
import sys


class CheckFailed(Exception):
    pass


STAGE = "connect"


def stage(name):
    """Names the step in progress, for the message of an unexpected error."""
    global STAGE
    STAGE = name


def check(name, expected, actual):
    if expected != actual:
        raise CheckFailed(f"{name}: expected {expected!r}, got {actual!r}")
    print(f"ok: {name}", flush=True)


def main(driver, run):
    """Runs `run(host, port)` (a function or a coroutine function) with the command line's
    HOST PORT; prints `FAIL: ...` and exits 1 on the first failure."""
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} HOST PORT")
    try:
        result = run(sys.argv[1], int(sys.argv[2]))
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except CheckFailed as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
    except Exception as e:  # unexpected driver/server error
        msg = str(e).replace("\n", " | ")
        print(f"FAIL: {STAGE}: unexpected {type(e).__name__}: {msg}", flush=True)
        sys.exit(1)
    print(f"all {driver} checks passed", flush=True)
