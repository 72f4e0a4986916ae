#!/usr/bin/env bash
# Runs every libFuzzer target for FUZZ_SECONDS seconds each (`make fuzz`).
#
# Each tests/fuzz/fuzz_NAME.c is built with clang, ASan and UBSan against
# src/http/*.c, then run in one process over two corpora: a scratch one in
# build/fuzz/corpus/NAME/ (where new inputs are saved, kept between runs) and
# the committed seeds in tests/fuzz/corpus/NAME/. Any finding (crash, sanitizer
# report, leak, timeout, out-of-memory) stops that target; the input is kept in
# build/fuzz/artifacts/NAME/ and the script exits 1. It prints the number of
# executions of each target and the total.
#
#   FUZZ_SECONDS=600 bash tests/fuzz/run.sh          all targets
#   FUZZ_SECONDS=60 bash tests/fuzz/run.sh fuzz_http1  some of them
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

seconds=${FUZZ_SECONDS:-60}
# libFuzzer reads -max_total_time=0 as "forever".
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
  echo "fuzz: FUZZ_SECONDS must be a positive number of seconds (got '$seconds')" >&2
  exit 2
fi
if ! command -v clang >/dev/null; then
  echo "fuzz: clang is missing (Debian packages: clang libclang-rt-14-dev)" >&2
  exit 2
fi

out=build/fuzz
mkdir -p "$out"
if (($# > 0)); then
  sources=()
  for name in "$@"; do sources+=("tests/fuzz/$name.c"); done
else
  sources=(tests/fuzz/fuzz_*.c)
fi

status=0
total_execs=0
for src in "${sources[@]}"; do
  name=$(basename "$src" .c)
  bin=$out/$name
  echo "fuzz: building $name"
  # -fno-sanitize-recover: a UBSan report must stop the run like a crash,
  # instead of being printed and forgotten.
  # Each target names the modules it needs on a "// fuzz-sources:" line
  # (default: the HTTP parser) and libraries on "// fuzz-libs:".
  mods=$(sed -n 's|^// fuzz-sources: *||p' "$src")
  libs=$(sed -n 's|^// fuzz-libs: *||p' "$src")
  # shellcheck disable=SC2086
  if ! clang -std=c17 -D_GNU_SOURCE -g -O1 -Isrc -fsanitize=fuzzer,address,undefined \
      -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
      "$src" ${mods:-src/http/*.c} -o "$bin" $libs; then
    echo "fuzz: $name: build failed" >&2
    status=1
    continue
  fi

  scratch=$out/corpus/$name
  seeds=tests/fuzz/corpus/$name
  artifacts=$out/artifacts/$name/
  log=$out/$name.log
  mkdir -p "$scratch" "$artifacts"
  corpora=("$scratch")
  [[ -d $seeds ]] && corpora+=("$seeds")

  echo "fuzz: running $name for ${seconds}s, one process (log: $log)"
  start=$(date +%s)
  # No pipe: $? is the fuzzer's own exit status.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -print_final_stats=1 -artifact_prefix="$artifacts" "${corpora[@]}" >"$log" 2>&1
  rc=$?
  elapsed=$(($(date +%s) - start))

  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if [[ -z $execs ]]; then
    # No final stats after a crash: take the last progress line's count.
    execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
  fi
  execs=${execs:-0}
  total_execs=$((total_execs + execs))
  rate=$((elapsed > 0 ? execs / elapsed : execs))
  if ((rc != 0)); then
    echo "fuzz: $name: FINDING (exit $rc) after $execs executions in ${elapsed}s"
    echo "fuzz: inputs kept in $artifacts:"
    ls -l "$artifacts"
    echo "fuzz: end of $log:"
    tail -n 60 "$log"
    status=1
  else
    echo "fuzz: $name: $execs executions in ${elapsed}s ($rate/s), no finding"
  fi
done

echo "fuzz: total $total_execs executions"
exit $status
