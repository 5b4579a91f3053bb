"""A well-behaved bot: does some work and reports every two seconds."""

import itertools
import time

print("ticker: up and working", flush=True)
for tick in itertools.count(1):
    time.sleep(2)
    print(f"ticker: tick {tick}", flush=True)
