#!/usr/bin/env bash
# mailroom's full test run, as CI runs it (as root, on Debian 12):
#
#   1. scripts/install-deps.sh                      (apt; skips what is installed)
#   2. build/        RelWithDebInfo build            (cmake + make -j2, ccache)
#   3. ctest in build/: unit, component and C++ integration tests
#   4. build-asan/   ASan + UBSan build; ctest -L 'unit|component' there
#   5. real Dovecot, Cyrus, Courier, Redis, PostgreSQL and Sidekiq (tests/servers/start-all.sh,
#      MAILROOM_INTEROP=1) and /usr/bin/python3 -m pytest tests/integration
#      against build/mailroom (fault table, interop table); then, with step 4,
#      test_graph.py, test_que.py, test_letter_opener.py and test_set_aside.py
#      once more against build-asan/mailroom
#   6. everything stopped again (also on failure or Ctrl-C)
#   7. build-fuzz/   libFuzzer targets (clang-14), each run for $MAILROOM_FUZZ_SECONDS
#                    (20) on a copy of its seed corpus in fuzz/corpus/
#   8. closing line "N passed, N failed" (ctest + pytest + fuzzers); exit 1 if anything failed
#
# usage: scripts/test.sh [--quick] [--no-deps] [--no-asan] [--no-ctest] [--no-pytest]
#                        [--no-fuzz] [-k EXPR] [--keep-servers] [--repeat N]
#   --quick         skip the sanitizer build (step 4)
#   --no-deps       skip step 1
#   --no-ctest      skip step 3 (and 4)
#   --no-pytest     skip step 5
#   --no-fuzz       skip step 7
#   -k EXPR         only the integration tests matching EXPR (pytest -k)
#   --keep-servers  leave the test servers running (prints how to stop them)
#   --repeat N      build once, then run steps 3-6 N times in a row (fresh servers
#                   each time) and count every run: a suite that passes once and
#                   fails once is failing. The fuzzers run once.
# env: MAILROOM_JOBS (2) build parallelism; MAILROOM_BUILD_DIR (build),
#      MAILROOM_ASAN_BUILD_DIR (build-asan); MAILROOM_FUZZ_SECONDS (20) per fuzzer
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

QUICK=0 DEPS=1 CTEST=1 PYTEST=1 FUZZ=1 KEEP=0 REPEAT=1
PYTEST_K=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick|--no-asan) QUICK=1 ;;
    --no-deps) DEPS=0 ;;
    --no-ctest) CTEST=0 ;;
    --no-pytest) PYTEST=0 ;;
    --no-fuzz) FUZZ=0 ;;
    --keep-servers) KEEP=1 ;;
    -k) shift; PYTEST_K=(-k "${1:?-k needs an expression}") ;;
    --repeat) shift; REPEAT="${1:?--repeat needs a count}"
              [[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "test.sh: --repeat needs a positive count" >&2; exit 2; } ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

JOBS="${MAILROOM_JOBS:-2}"
BUILD="${MAILROOM_BUILD_DIR:-build}"
ASAN_BUILD="${MAILROOM_ASAN_BUILD_DIR:-build-asan}"
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
case "$ASAN_BUILD" in /*) ;; *) ASAN_BUILD="$ROOT/$ASAN_BUILD" ;; esac
PY=/usr/bin/python3   # Debian's: has python3-pytest and python3-redis
LOGS="$BUILD/test-logs"
export DEBIAN_FRONTEND=noninteractive

PASSED=0 FAILED=0
PHASES=()        # "name|seconds|result"
NOTES=()         # failures worth repeating at the end
SERVERS_DIR=""

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
banner() { printf '\n==== %s ====\n' "$*"; }
phase() { PHASES+=("$1|$2|$3"); }
fail_note() { NOTES+=("$1"); }

cleanup() {
  local rc=$?
  if [ -n "$SERVERS_DIR" ]; then
    if [ "$KEEP" = 1 ]; then
      echo "test servers left running: . $SERVERS_DIR/env.sh; stop: tests/servers/stop-all.sh $SERVERS_DIR"
    else
      tests/servers/stop-all.sh "$SERVERS_DIR" >/dev/null 2>&1 || true
    fi
  fi
  return $rc
}
trap cleanup EXIT
trap 'echo "test.sh: interrupted" >&2; exit 130' INT TERM

# ctest_counts LOG -> "passed failed" from ctest's summary
ctest_counts() {
  local line total failed
  if grep -q 'No tests were found' "$1"; then echo "0 0"; return; fi
  line="$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$1" | tail -n1)"
  [ -n "$line" ] || { echo "- -"; return; }
  failed="$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")"
  total="$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")"
  echo "$((total - failed)) $failed"
}

# pytest_counts LOG -> "passed failed" (errors count as failed)
pytest_counts() {
  local line p f e
  line="$(grep -E '^(=+ )?([0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?)(, )?)+ in [0-9.]+s' "$1" | tail -n1)"
  if [ -z "$line" ]; then
    grep -qE 'no tests ran' "$1" && { echo "0 0"; return; }
    echo "- -"; return
  fi
  p="$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)"
  f="$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || echo 0)"
  e="$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+' || echo 0)"
  echo "$p $((f + e))"
}

# run_ctest NAME DIR LOG [ctest args...]
run_ctest() {
  local name="$1" dir="$2" log="$3" t rc p f
  shift 3
  banner "$name"
  t="$(now)"
  ctest --test-dir "$dir" --output-on-failure "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  read -r p f <<<"$(ctest_counts "$log")"
  if [ "$p" = - ]; then
    p=0; f=1; fail_note "$name: ctest exited $rc without a summary (see $log)"
  elif [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    f=1; fail_note "$name: ctest exited $rc (see $log)"
  elif [ "$f" != 0 ]; then
    fail_note "$name: $f failed (details in $log)"
  fi
  PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
  phase "$name" "$(took "$t")" "$p passed, $f failed"
}

# compile DIR LABEL-REGEX: build only the executables of the tests carrying those
# labels (the sanitizer run needs neither the service binary nor the integration
# tests); the whole tree if that is not possible
compile() {
  local dir="$1" labels="$2" targets=()
  if [ -n "$labels" ]; then
    mapfile -t targets < <(ctest --test-dir "$dir" -N -L "$labels" 2>/dev/null |
                            sed -nE 's/^ *Test +#[0-9]+: [A-Za-z0-9_-]+\.(.+)$/\1/p')
    if [ "${#targets[@]}" -gt 0 ]; then
      echo "building the ${#targets[@]} test executables labelled '$labels': ${targets[*]}"
      cmake --build "$dir" -j"$JOBS" --target "${targets[@]}" && return 0
      echo "building only those targets failed; building everything"
    elif ctest --test-dir "$dir" -N -L "$labels" 2>/dev/null | grep -q 'Total Tests: 0'; then
      echo "no tests labelled '$labels': nothing to build"
      return 0
    fi
  fi
  cmake --build "$dir" -j"$JOBS"
}

# build NAME DIR LABELS [cmake args...] -> 0 if configured and built
build() {
  local name="$1" dir="$2" labels="$3" t rc
  shift 3
  banner "$name"
  t="$(now)"
  mkdir -p "$LOGS"
  { cmake -S . -B "$dir" "$@" && compile "$dir" "$labels"; } 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 0 ]; then
    phase "$name" "$(took "$t")" ok
  else
    phase "$name" "$(took "$t")" FAILED
    fail_note "$name failed (log: $LOGS/$name.log)"
    FAILED=$((FAILED + 1))
  fi
  return "$rc"
}

# run_pytest PHASE BINARY LOG [paths...]: the integration tests against BINARY
# on the servers of $SERVERS_DIR; counts into PASSED/FAILED, sets PYTEST_FAILED.
run_pytest() {
  local name="$1" bin="$2" log="$3" t rc p fl
  shift 3
  banner "$name"
  t="$(now)"
  TEST_SERVERS_DIR="$SERVERS_DIR" MAILROOM_BIN="$bin" \
    timeout --kill-after=30 45m "$PY" -m pytest "$@" -q -rfE -p no:cacheprovider \
    "${PYTEST_K[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  read -r p fl <<<"$(pytest_counts "$log")"
  if [ "$p" = - ]; then
    p=0; fl=1; fail_note "$name exited $rc without a summary (see $log)"
  elif [ "$rc" != 0 ] && [ "$rc" != 5 ] && [ "$fl" = 0 ]; then
    fl=1; fail_note "$name exited $rc (see $log)"
  elif [ "$fl" != 0 ]; then
    fail_note "$name: $fl failed (details in $log)"
  fi
  PASSED=$((PASSED + p)); FAILED=$((FAILED + fl)); PYTEST_FAILED=$fl
  phase "$name" "$(took "$t")" "$p passed, $fl failed"
}

# The whole run is one function, so bash has read all of it before it starts
# (editing this file during a run cannot derail the run).
main() {
  T0="$(now)"

  # 1. dependencies --------------------------------------------------------------
  if [ "$DEPS" = 1 ]; then
    banner "install dependencies"
    t="$(now)"
    if scripts/install-deps.sh; then
      phase "install-deps" "$(took "$t")" ok
    else
      phase "install-deps" "$(took "$t")" FAILED
      echo "test.sh: scripts/install-deps.sh failed; nothing else can run" >&2
      echo "0 passed, 1 failed"
      exit 1
    fi
  fi
  mkdir -p "$LOGS"

  # 2. main build; 4. the sanitizer build (both once, whatever --repeat says) -------
  BUILT=0 ASAN_BUILT=0 ASAN_SERVICE=0
  if build build "$BUILD" "" -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
    BUILT=1
    if [ "$QUICK" = 0 ] && [ "$CTEST" = 1 ]; then
      build build-asan "$ASAN_BUILD" 'unit|component' -DCMAKE_BUILD_TYPE=Debug \
        -DMAILROOM_SANITIZE=ON && ASAN_BUILT=1
      if [ "$ASAN_BUILT" = 1 ] && [ "$PYTEST" = 1 ]; then
        t="$(now)"
        if cmake --build "$ASAN_BUILD" -j"$JOBS" --target mailroom > "$LOGS/build-asan-service.log" 2>&1; then
          ASAN_SERVICE=1; phase build-asan-service "$(took "$t")" ok
        else
          phase build-asan-service "$(took "$t")" FAILED
          fail_note "build-asan-service failed (log: $LOGS/build-asan-service.log)"
          FAILED=$((FAILED + 1))
        fi
      fi
    fi
  fi

  # 3, 4, 5: the tests, REPEAT times ----------------------------------------------
  for ((run = 1; run <= REPEAT; run++)); do
    R=""  # phase and log suffix of this run
    [ "$REPEAT" -gt 1 ] && R=" #$run" && banner "run $run of $REPEAT"
    L="${R:+-$run}"

    # 3. unit, component and C++ integration tests
    [ "$CTEST" = 1 ] && [ "$BUILT" = 1 ] && run_ctest "ctest$R" "$BUILD" "$LOGS/ctest$L.log"

    # 4. unit and component tests under ASan + UBSan
    if [ "$ASAN_BUILT" = 1 ]; then
      export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}"
      export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
      run_ctest "ctest-asan$R" "$ASAN_BUILD" "$LOGS/ctest-asan$L.log" -L 'unit|component'
      unset ASAN_OPTIONS UBSAN_OPTIONS
    fi

    # 5. integration tests against real servers
    if [ "$PYTEST" = 1 ]; then
      banner "integration tests (Dovecot, Cyrus, Courier, Redis, Sidekiq; pytest)$R"
      t="$(now)"
      SERVERS_DIR="$(mktemp -d /tmp/mailroom-test.XXXXXX)"
      chmod 0755 "$SERVERS_DIR"
      # CI needs every server: a missing one fails the start instead of
      # quietly skipping its tests.
      if MAILROOM_INTEROP="${MAILROOM_INTEROP:-1}" tests/servers/start-all.sh "$SERVERS_DIR" \
           > "$LOGS/servers$L.log" 2>&1; then
        phase "start servers$R" "$(took "$t")" ok
        echo "servers: $SERVERS_DIR (ports in $SERVERS_DIR/env.sh)"
        [ "$BUILT" = 1 ] || echo "note: the build failed, so build/mailroom may be missing or stale"
        MAILROOM_FAULT_TABLE="$LOGS/fault-table$L.json" \
          MAILROOM_INTEROP_TABLE="$LOGS/interop-table$L.json" \
          run_pytest "pytest$R" "$BUILD/mailroom" "$LOGS/pytest$L.log" tests/integration
        f=$PYTEST_FAILED
        # The Graph inbox (HTTP pool threads, concurrent coroutines), the que
        # delivery (libpq on its pool's threads), letter_opener (GMime), the
        # set-aside paths and the cluster mode (watchers started and stopped
        # by their leases) once more under ASan + UBSan: a sanitizer report
        # fails the run.
        if [ "$ASAN_SERVICE" = 1 ]; then
          MAILROOM_FAULT_TABLE="$LOGS/fault-table-asan$L.json" \
            ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}" \
            UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
            run_pytest "pytest-asan$R" "$ASAN_BUILD/mailroom" "$LOGS/pytest-asan$L.log" \
            tests/integration/test_graph.py tests/integration/test_que.py \
            tests/integration/test_letter_opener.py tests/integration/test_set_aside.py \
            tests/integration/test_cluster.py
          f=$((f + PYTEST_FAILED))
        fi
      else
        f=1
        phase "start servers$R" "$(took "$t")" FAILED
        cat "$LOGS/servers$L.log" >&2
        fail_note "the test servers did not start (log: $LOGS/servers$L.log)"
        FAILED=$((FAILED + 1))
      fi
      t="$(now)"
      if [ "$KEEP" = 0 ]; then
        tests/servers/stop-all.sh "$SERVERS_DIR" >/dev/null 2>&1 || true
        # keep the servers' logs and mailboxes only when something failed
        [ "${f:-1}" = 0 ] && rm -rf "$SERVERS_DIR"
        SERVERS_DIR=""
        phase "stop servers$R" "$(took "$t")" ok
      elif [ "$run" -lt "$REPEAT" ]; then
        echo "test servers of run $run left running: $SERVERS_DIR"
        SERVERS_DIR=""
      fi
    fi
  done

  # 6. fuzzers: a short bounded run of each libFuzzer target ---------------------------
  if [ "$FUZZ" = 1 ]; then
    FUZZERS=(imap_response_parser_fuzz resp_parser_fuzz config_load_fuzz mime_headers_fuzz
             graph_answer_fuzz)
    banner "build-fuzz"
    t="$(now)"
    # Only the fuzz targets and the I/O-free libraries they link.
    { cmake -S . -B "$ROOT/build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILROOM_FUZZ=ON \
        -DMAILROOM_TESTS=OFF -DCMAKE_CXX_COMPILER=clang++-14 &&
      cmake --build "$ROOT/build-fuzz" -j"$JOBS" --target "${FUZZERS[@]}"; } 2>&1 |
      tee "$LOGS/build-fuzz.log"
    if [ "${PIPESTATUS[0]}" = 0 ]; then
      phase build-fuzz "$(took "$t")" ok
    else
      phase build-fuzz "$(took "$t")" FAILED
      fail_note "build-fuzz failed (log: $LOGS/build-fuzz.log)"
      FAILED=$((FAILED + 1))
      FUZZERS=()
    fi
    if [ "${#FUZZERS[@]}" -gt 0 ]; then
      for target in "${FUZZERS[@]}"; do
        corpus="${target%_fuzz}"
        case "$corpus" in imap_response_parser) corpus=imap_response ;; resp_parser) corpus=resp ;;
                          config_load) corpus=config ;; esac
        banner "fuzz $target (${FUZZ_SECONDS:=${MAILROOM_FUZZ_SECONDS:-20}} s)"
        t="$(now)"
        work="$(mktemp -d /tmp/mailroom-fuzz.XXXXXX)"
        # New inputs go to the scratch dir; the seeds in the repo stay as they are.
        "$ROOT/build-fuzz/fuzz/$target" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 \
          -artifact_prefix="$work/" "$work" "fuzz/corpus/$corpus" > "$LOGS/$target.log" 2>&1
        rc=$?
        runs="$(grep -oE 'Done [0-9]+ runs' "$LOGS/$target.log" | grep -oE '[0-9]+' || echo '?')"
        if [ "$rc" = 0 ]; then
          PASSED=$((PASSED + 1)); phase "$target" "$(took "$t")" "ok, $runs runs"
          rm -rf "$work"
        else
          FAILED=$((FAILED + 1)); phase "$target" "$(took "$t")" "FAILED (exit $rc)"
          tail -n 40 "$LOGS/$target.log"
          fail_note "$target found a crash (log: $LOGS/$target.log, input in $work)"
        fi
      done
    fi
  fi

  # 7. summary -------------------------------------------------------------------------
  banner "summary"
  for ph in "${PHASES[@]}"; do
    IFS='|' read -r name secs result <<<"$ph"
    printf '  %-26s %6ss  %s\n' "$name" "$secs" "$result"
  done
  printf '  %-26s %6ss\n' total "$(took "$T0")"
  for n in "${NOTES[@]}"; do echo "  ! $n"; done
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

main
