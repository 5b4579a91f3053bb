"""A flaky bot: crashes after a few seconds, so you can watch restarts and `failed`."""

import sys
import time

print("crasher: starting, will crash in 3 seconds", flush=True)
time.sleep(3)
print("crasher: something went wrong!", file=sys.stderr, flush=True)
sys.exit(1)
