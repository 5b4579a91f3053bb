"""A bot watched for hangs: it beats every loop, so trio-orch restarts it if the loop
ever gets stuck for longer than its heartbeat_timeout (see bot_config-example.yaml)."""

import itertools
import time

from trio_orchestrator import heartbeat

print("heartbeat: up and working", flush=True)
for tick in itertools.count(1):
    heartbeat.beat()  # "I am alive": touches $TRIO_ORCH_HEARTBEAT_FILE
    time.sleep(2)
    if tick % 5 == 0:
        print(f"heartbeat: {tick} beats so far", flush=True)
