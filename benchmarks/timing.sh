#!/usr/bin/env bash
# Wall time and peak RSS of whole commands (fresh processes), scsc against the scanpy Leiden pipeline.
# Usage: bash benchmarks/timing.sh [out.csv]   (run with nothing else on the machine)
set -euo pipefail
out=${1:-benchmarks/results/timing.csv}
data=$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets
tmp=$(mktemp -d)
echo "dataset,cells,command,seconds,peak_gb" > "$out"
measure() {  # dataset cells label command...
  local ds=$1 cells=$2 label=$3; shift 3
  /usr/bin/time -v "$@" > "$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$tmp/log" | awk -F': ' '{print $2}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(grep "Maximum resident" "$tmp/log" | awk -F': ' '{printf "%.3f", $2/1024/1024}')
  echo "$ds,$cells,$label,$wall,$rss" >> "$out"
  echo "$ds $label: ${wall}s ${rss}GB"
}
for spec in "mouse_bladder_cell_select_2100 2100 16" "Grace_CITE_CBMC_counts_top2000 8617 15"; do
  set -- $spec
  measure "$1" "$2" "scsc cluster" scsc cluster "$data/$1.h5" --n-clusters "$3" --out "$tmp/$1" -q
  measure "$1" "$2" "scanpy Leiden pipeline (+UMAP)" python "$(dirname "$0")/scanpy_pipeline.py" "$data/$1.h5"
done
rm -rf "$tmp"
