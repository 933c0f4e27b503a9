#!/usr/bin/env bash
# Wall time and peak RSS of whole commands (fresh processes), scsc against the scanpy Leiden pipeline, and the
# seconds of each scsc stage (from uns["scsc"]["timings"] of its result).
# Each pair runs REPEATS times in turn (scsc, scanpy, scsc, scanpy, ...) after one warm-up pair that is not
# recorded (numba's on-disk caches, the file cache); the report quotes medians and the median of the
# pair-by-pair ratios, so a drift in the machine's speed hits both commands alike.
# Usage: bash benchmarks/timing.sh [out.csv] [REPEATS=3]   (run with nothing else on the machine)
set -euo pipefail
out=$(realpath -m "${1:-benchmarks/results/timing.csv}")
repeats=${2:-3}
cd "$(dirname "$0")/.."   # the repository root: python -m benchmarks.peers
shared=$(cd .. && pwd)/shared
tmp=$(mktemp -d)
echo "dataset,cells,command,run,seconds,peak_gb,stage_preprocess_graph,stage_pretrain,stage_init,stage_cluster,stage_total" > "$out"
measure() {  # dataset cells label repeat run_folder command...   (repeat 0: warm-up, not recorded)
  local ds=$1 cells=$2 label=$3 rep=$4 run=$5; shift 5
  /usr/bin/time -v "$@" > "$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
  [ "$rep" = 0 ] && return 0
  local wall rss stages=",,,,"
  wall=$(grep "Elapsed (wall clock)" "$tmp/log" | awk -F': ' '{print $2}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(grep "Maximum resident" "$tmp/log" | awk -F': ' '{printf "%.3f", $2/1024/1024}')
  if [ -n "$run" ]; then
    stages=$(python -c "
import anndata as ad, sys
t = ad.read_h5ad(sys.argv[1]).uns['scsc']['timings']
print(','.join(f'{t[k]:.2f}' for k in ('preprocess_graph', 'pretrain', 'init', 'cluster', 'total')))" "$run/result.h5ad")
  fi
  echo "$ds,$cells,$label,$rep,$wall,$rss,$stages" >> "$out"
  echo "$ds $label #$rep: ${wall}s ${rss}GB $stages"
}
for spec in "tuning/Zheng_sortedPBMC_MUDAN 2140 9" "datasets/mouse_bladder_cell_select_2100 2100 16" \
            "datasets/Grace_CITE_CBMC_counts_top2000 8617 15"; do
  set -- $spec
  name=$(basename "$1")
  for rep in $(seq 0 "$repeats"); do
    measure "$name" "$2" "scsc cluster" "$rep" "$tmp/$name" scsc cluster "$shared/$1.h5" --n-clusters "$3" \
      --out "$tmp/$name" -q --overwrite
    measure "$name" "$2" "scanpy Leiden pipeline (+UMAP)" "$rep" "" python -m benchmarks.peers "$shared/$1.h5"
  done
done
rm -rf "$tmp"
