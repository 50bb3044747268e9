#!/usr/bin/env bash
# Expert load balance of moe-tiny on tiny Shakespeare, one run per balance option (none, aux, bias), at the preset's
# batch (8 x 256 = 2048 tokens a step, 4096 top-2 assignments: 512 per expert) and one rank; prints, per option, the
# max/mean expert load two ways (the worst MoE layer / the mean over the layers): per batch, each step's own averaged
# over the last 50 steps, and over 50 batches, the load summed over the last 50 steps (Wang et al. 2024 report both,
# as MaxVio_batch and MaxVio_global); then the validation loss at the last step. Each run is a few minutes of CPU on
# 2 cores; they run one after another.
#   scripts/moe-balance.sh                    200 steps, runs under runs/moe-balance/{none,aux,bias}
#   scripts/moe-balance.sh 300 --lr 6e-4      other steps; the rest are flags for 'shardwise train'
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
steps="${1:-200}"
shift $(( $# > 0 ? 1 : 0 ))

# mean of a metrics.jsonl field over the last 50 rows; the last val_loss
last50() { grep -o "\"$2\":[0-9.eE+-]*" "$1" | tail -n 50 | awk -F: '{ s += $2; n++ } END { printf "%.3f", s / n }'; }
lastval() { grep -o '"val_loss":[0-9.eE+-]*' "$1" | tail -n 1 | awk -F: '{ printf "%.4f", $2 }'; }
# a field's value at the last step
last() { grep -o "\"$2\":[0-9.eE+-]*" "$1" | tail -n 1 | awk -F: '{ printf "%.3f", $2 }'; }

printf '%-8s %24s %24s %10s\n' balance "per batch: worst / mean" "50 batches: worst / mean" "val loss"
mkdir -p "$root/runs/moe-balance"
for balance in none aux bias; do
  dir="$root/runs/moe-balance/$balance"
  rm -rf "$dir"   # this script's own output of an earlier call
  "$root/shardwise" train --preset moe-tiny --moe-balance "$balance" --steps "$steps" --no-checkpoints \
    --run-dir "$dir" "$@" > "$dir.log" 2>&1 || { echo "run $balance failed: see $dir.log" >&2; exit 1; }
  m="$dir/metrics.jsonl"
  printf '%-8s %24s %24s %10s\n' "$balance" "$(last50 "$m" moe_load_max_over_mean) / $(last50 "$m" moe_load_max_over_mean_layers)" \
    "$(last "$m" moe_load_max_over_mean_50) / $(last "$m" moe_load_max_over_mean_layers_50)" "$(lastval "$m")"
done
