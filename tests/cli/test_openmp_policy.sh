#!/usr/bin/env bash
# test_openmp_policy.sh: k22 runs with OMP_WAIT_POLICY=PASSIVE unless the user set a policy
# (src/main.c: libgomp's spinning default made the CPU training steps 13-19x slower on 2 cores),
# and the re-executed process keeps its arguments, exit code and environment.
set -u
K22=${K22_BIN:?K22_BIN must point at the k22 binary}
tmp=$(mktemp -d /tmp/k22-test-omp-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli_lib.sh"

expect_rc 0 "version without a policy" env -u OMP_WAIT_POLICY "$K22" version
expect_in "$tmp/out" "openmp wait policy: PASSIVE" "PASSIVE by default"
expect_rc 0 "version with ACTIVE" env OMP_WAIT_POLICY=ACTIVE "$K22" version
expect_in "$tmp/out" "openmp wait policy: ACTIVE" "the user's choice stays"
# arguments and the exit code survive the re-exec
expect_rc 2 "a wrong flag after the re-exec" env -u OMP_WAIT_POLICY K22_TEST_MARK=kept "$K22" synth --out "$tmp/x" --nope
expect_in "$tmp/err" "--nope" "the re-executed k22 saw the arguments"
expect_rc 0 "synth after the re-exec" env -u OMP_WAIT_POLICY "$K22" synth --out "$tmp/s" --n 2 --min_size 32 --max_size 40
if [ -f "$tmp/s/metadata.jsonl" ]; then ok; else fail "synth wrote nothing"; fi

echo "test_openmp_policy: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
