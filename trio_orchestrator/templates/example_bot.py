"""An example bot for trio-orch: it prints a heartbeat and stops cleanly when asked.

trio-orch runs this file as ``python main.py`` in its directory, shows every line it
prints as ``[Example] line`` (and writes it to logs/Example.log), restarts it if it
crashes, and stops it with SIGTERM (then SIGKILL after ``stop_timeout`` seconds). Replace
the body of the loop with your bot's work; keep the signal handlers so that a stop is
quick and clean. Run it alone with ``python main.py`` (Ctrl-C stops it).
"""

import os
import signal
import sys
import threading

HEARTBEAT_SECONDS = 5.0

stopping = threading.Event()


def request_stop(signum: int, frame: object) -> None:
    print(f"{signal.Signals(signum).name} received, stopping", flush=True)
    stopping.set()


def main() -> int:
    signal.signal(signal.SIGTERM, request_stop)  # `trio-orch stop Example`
    signal.signal(signal.SIGINT, request_stop)  # Ctrl-C when run by hand
    print(f"example bot started (pid {os.getpid()})", flush=True)
    beats = 0
    while not stopping.is_set():
        beats += 1
        # flush=True (or PYTHONUNBUFFERED, which trio-orch sets) shows lines at once.
        print(f"heartbeat {beats}", flush=True)
        stopping.wait(HEARTBEAT_SECONDS)
    print(f"stopped cleanly after {beats} heartbeats", flush=True)
    return 0  # exit code 0: with `restart: on-failure` the bot stays down


if __name__ == "__main__":
    sys.exit(main())
