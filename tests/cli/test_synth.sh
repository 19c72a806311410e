#!/usr/bin/env bash
# test_synth.sh: `k22 synth` from the command line: the same seed gives identical folders,
# another seed another one; JPEG and PNG both appear; metadata.jsonl has one
# {"file_name", "text"} line per image; a non-empty --out is refused without --force; bad
# sizes and --help behave. Needs K22_BIN (set by CTest).
set -u
K22=${K22_BIN:?K22_BIN must point at the k22 binary}
tmp=$(mktemp -d /tmp/k22-test-synth-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli_lib.sh"

expect_rc 0 "synth a" "$K22" synth --out "$tmp/a" --n 24 --seed 5 --min_size 64 --max_size 300
expect_rc 0 "synth b" "$K22" synth --out "$tmp/b" --n 24 --seed 5 --min_size 64 --max_size 300
expect_rc 0 "synth c" "$K22" synth --out "$tmp/c" --n 24 --seed 6 --min_size 64 --max_size 300
if diff -r "$tmp/a" "$tmp/b" >/dev/null; then ok; else fail "same seed gave different folders"; fi
if cmp -s "$tmp/a/metadata.jsonl" "$tmp/c/metadata.jsonl"; then fail "seeds 5 and 6 gave the same metadata"; else ok; fi
lines=$(wc -l <"$tmp/a/metadata.jsonl")
[ "$lines" -eq 24 ] && ok || fail "metadata.jsonl has $lines lines, want 24"
njpg=$(ls "$tmp/a" | grep -c '\.jpg$')
npng=$(ls "$tmp/a" | grep -c '\.png$')
[ $((njpg + npng)) -eq 24 ] && [ "$njpg" -gt 0 ] && [ "$npng" -gt 0 ] && ok || fail "files: $njpg jpg, $npng png"
expect_in "$tmp/a/metadata.jsonl" '{"file_name": "000000.' "first metadata line"
expect_in "$tmp/a/metadata.jsonl" '"text": "' "metadata text key"
# every metadata line names a file that exists
missing=0
while IFS= read -r line; do
    f=${line#*\"file_name\": \"}
    f=${f%%\"*}
    [ -f "$tmp/a/$f" ] || missing=$((missing + 1))
done <"$tmp/a/metadata.jsonl"
[ "$missing" -eq 0 ] && ok || fail "$missing metadata rows name missing files"
if [ -e "$tmp/a.tmp" ]; then fail "a .tmp folder was left"; else ok; fi

# a non-empty --out: refused without --force, replaced with it
expect_rc 2 "non-empty out" "$K22" synth --out "$tmp/a" --n 3 --seed 1 --min_size 64 --max_size 100
expect_in "$tmp/err" "--force" "refusal names --force"
expect_rc 0 "force" "$K22" synth --out "$tmp/a" --n 3 --seed 1 --min_size 64 --max_size 100 --force
lines=$(wc -l <"$tmp/a/metadata.jsonl")
[ "$lines" -eq 3 ] && ok || fail "after --force metadata.jsonl has $lines lines, want 3"

expect_rc 2 "min > max" "$K22" synth --out "$tmp/x" --n 3 --min_size 500 --max_size 100
expect_in "$tmp/err" "min_size" "size error names the option"
expect_rc 2 "n = 0" "$K22" synth --out "$tmp/x" --n 0
expect_rc 2 "no --out" "$K22" synth --n 3
expect_rc 0 "help" "$K22" synth --help
expect_in "$tmp/out" "--max_size" "help lists options"
if [ -e "$tmp/x" ]; then fail "a refused run left $tmp/x"; else ok; fi

echo "test_synth.sh: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
