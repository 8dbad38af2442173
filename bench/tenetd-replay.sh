#!/usr/bin/env bash
# The switch command replay.sh runs for tenet: picks the scenario's config and exports
# what it needs beyond the harness's variables (the route scenario's next-hop MACs,
# taken from ROUTES="10.1.0.0/16=MAC1 10.1.128.0/17=MAC2"). TENET_SCENARIO runs another
# config on the scenario's pcap (snat: the route pcap through SNAT).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "${SCENARIO:-}" = route ]; then
    first=${ROUTES%% *}
    export NEXT_HOP_1=${first#*=}
    export NEXT_HOP_2=${ROUTES##*=}
fi
exec "$here/target/release/tenetd" --config "$here/configs/bench/replay-${TENET_SCENARIO:-$SCENARIO}.toml"
