# cli_lib.sh: the check helpers every tests/cli/test_*.sh sources after setting $tmp (its scratch
# folder): counters, expect_rc, expect_in, and the closing line CTest reads. CLI_EXCERPT=tail shows
# the end of a file in failure messages instead of its start (for long logs).
fails=0
checks=0
ok() { checks=$((checks + 1)); }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }
excerpt() { if [ "${CLI_EXCERPT:-head}" = tail ]; then tail -c 800 "$1"; else head -c 600 "$1"; fi; }
expect_rc() { # expect_rc WANT DESCRIPTION CMD...
    local want=$1 what=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ "$rc" -eq "$want" ]; then ok; else fail "$what: exit $rc, want $want; stderr: $(excerpt "$tmp/err")"; fi
}
expect_in() { # expect_in FILE TEXT DESCRIPTION
    if grep -qF -- "$2" "$1"; then ok; else fail "$3: '$2' not in $(basename "$1"): $(excerpt "$1")"; fi
}
