#!/usr/bin/env bash
# Runs each fuzz target for SECONDS: libFuzzer with the committed seeds
# (fuzz/corpus/<target>, read only) and a working corpus in
# fuzz/target/corpus/<target> (where new inputs go), its dictionary from
# fuzz/dict/. Prints one line per target with the executions, the corpus
# size and the coverage, then "fuzz-rust: N passed, M failed". A crash
# fails the run; the input is kept in fuzz/target/artifacts/<target>/ and
# the end of libFuzzer's log is shown.
#
#   fuzz/run.sh SECONDS BIN_DIR TARGET...
set -uo pipefail
seconds=$1 bin_dir=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
passed=0 failed=0
for target in "$@"; do
  work=$here/target/corpus/$target
  artifacts=$here/target/artifacts/$target
  log=$here/target/logs/$target.log
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  dict=()
  [ -f "$here/dict/$target.dict" ] && dict=(-dict="$here/dict/$target.dict")
  "$bin_dir/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 "${dict[@]}" -artifact_prefix="$artifacts/" "$work" "$here/corpus/$target" \
    >"$log" 2>&1
  status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  inited=$(grep -oE 'INITED cov: [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
  done_line=$(grep -E '#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+$')
  corp=$(grep -oE 'corp: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+$')
  echo "fuzz-rust $target: ${execs:-0} executions in ${seconds}s, corpus ${corp:-?} inputs" \
       "($(find "$work" -type f | wc -l) in $work), coverage ${inited:-?} -> ${cov:-?} edges"
  if [ "$status" -eq 0 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    tail -n 60 "$log"
    echo "fuzz-rust $target: FAILED (libFuzzer exit $status); inputs in $artifacts/, log $log"
  fi
done
echo "fuzz-rust: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
