#!/usr/bin/env bash
# Runs tenet beside dpdk-testpmd (and, where the scenario has one, Open vSwitch with
# DPDK) with the shared harnesses, and keeps the results under bench/results/.
#
#   bench/run-peers.sh [replay|route|pvp|all] [ROUNDS]
#
# Quote medians of per-round ratios from summary.txt, never one run: identical runs on
# a 2-vCPU VM differ by up to 20%.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
rounds=${2:-5}
harness=../shared/bench
[ -d "$harness" ] || { echo "run-peers: $harness not found" >&2; exit 1; }
cargo build --release -p control --bin tenetd
stamp=$(date +%Y%m%d-%H%M)

if [ "$which" = replay ] || [ "$which" = all ]; then
    out=bench/results/$stamp-replay
    "$harness/replay.sh" -r "$rounds" -t "ideal custom:p2p" --label tenet -o "/tmp/tenet-replay-$stamp" \
        --switch-cmd 'bench/tenetd-replay.sh'
    mkdir -p "$out"
    cp "/tmp/tenet-replay-$stamp"/{summary.txt,results.csv,env.txt} "$out/"
fi
if [ "$which" = route ] || [ "$which" = all ]; then
    # The router beside OVS's dec_ttl + MAC rewrite flows, then SNAT (established
    # sessions) on the same pcap beside the same OVS flows.
    for mode in route snat; do
        out=bench/results/$stamp-$mode
        TENET_SCENARIO=$mode "$harness/replay.sh" -r "$rounds" -t "ideal ovs-route custom:route" \
            --label "tenet-$mode" -o "/tmp/tenet-$mode-$stamp" --switch-cmd 'bench/tenetd-replay.sh'
        mkdir -p "$out"
        cp "/tmp/tenet-$mode-$stamp"/{summary.txt,results.csv,env.txt} "$out/"
    done
fi
if [ "$which" = pvp ] || [ "$which" = all ]; then
    out=bench/results/$stamp-pvp
    "$harness/pvp.sh" -r "$rounds" -t "ideal custom" --label tenet -o "/tmp/tenet-pvp-$stamp" \
        --switch-cmd 'target/release/tenetd --config configs/bench/pvp.toml'
    mkdir -p "$out"
    cp "/tmp/tenet-pvp-$stamp"/{summary.txt,results.csv,env.txt} "$out/"
fi
