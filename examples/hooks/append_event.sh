#!/bin/sh
# A trio-orch event hook: appends one line per event to the file named by $1.
# For a real alert, replace the echo with e.g.
#   curl -s -H 'Content-Type: application/json' \
#        -d "{\"content\": \"$TRIO_ORCH_BOT $TRIO_ORCH_EVENT: $TRIO_ORCH_REASON\"}" "$DISCORD_WEBHOOK"
echo "$TRIO_ORCH_TIME $TRIO_ORCH_EVENT bot=$TRIO_ORCH_BOT exit=$TRIO_ORCH_EXIT_CODE" \
     "commit=$TRIO_ORCH_COMMIT previous=$TRIO_ORCH_PREVIOUS_COMMIT reason=$TRIO_ORCH_REASON" \
     >> "${1:-events.log}"
