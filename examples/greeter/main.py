"""A polite bot: handles SIGTERM and says goodbye before it exits."""

import signal
import sys
import time


def goodbye(signum, frame):
    print("greeter: SIGTERM received, goodbye!", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, goodbye)
print("greeter: hello! (stop me and I will say goodbye)", flush=True)
while True:
    time.sleep(5)
    print("greeter: still here", flush=True)
