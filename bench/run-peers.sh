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

# run_harness RUN SCRIPT TYPES LABEL SWITCH_CMD: one harness run, its results kept under
# bench/results/$stamp-RUN.
run_harness() {
    local run=$1 script=$2 types=$3 label=$4 switch_cmd=$5
    local scratch=/tmp/tenet-$run-$stamp out=bench/results/$stamp-$run
    "$harness/$script" -r "$rounds" -t "$types" --label "$label" -o "$scratch" \
        --switch-cmd "$switch_cmd"
    mkdir -p "$out"
    cp "$scratch"/{summary.txt,results.csv,env.txt} "$out/"
}

if [ "$which" = replay ] || [ "$which" = all ]; then
    run_harness replay replay.sh "ideal custom:p2p" tenet 'bench/tenetd-replay.sh'
fi
if [ "$which" = route ] || [ "$which" = all ]; then
    # The router beside OVS's dec_ttl + MAC rewrite flows, then SNAT (established
    # sessions) on the same pcap beside the same OVS flows.
    for mode in route snat; do
        TENET_SCENARIO=$mode run_harness "$mode" replay.sh "ideal ovs-route custom:route" "tenet-$mode" \
            'bench/tenetd-replay.sh'
    done
fi
if [ "$which" = pvp ] || [ "$which" = all ]; then
    run_harness pvp pvp.sh "ideal custom" tenet 'target/release/tenetd --config configs/bench/pvp.toml'
fi
