#!/usr/bin/env bash
# test_modulefile.sh: the Lmod modulefile as an admin gets it. Installs the build that made
# $K22_BIN into a scratch prefix (`cmake --install --prefix`), then with Lmod: `module use
# <prefix>/share/modulefiles`, `module load k22`, checks that `k22` now resolves to <prefix>/bin
# and `k22 --version` prints the modulefile's version, that K22_ROOT is the prefix, then `module
# unload k22` and checks PATH, K22_ROOT and LOADEDMODULES are exactly what they were before.
# Lmod missing: prints SKIPPED and exits 0 (CTest here has no skip code), unless
# K22_REQUIRE_LMOD=1, which makes that a failure.
set -u
K22=${K22_BIN:?K22_BIN must point at the k22 binary}
BUILD=$(cd "$(dirname "$K22")" && pwd)
export ASAN_OPTIONS=detect_leaks=0
fails=0
checks=0
ok() { checks=$((checks + 1)); }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }
check_eq() { # check_eq WHAT GOT WANT
    if [ "$2" = "$3" ]; then ok; else fail "$1: got '$2', want '$3'"; fi
}

# find_lmod_init: Lmod's bash init script (Debian: /usr/share/lmod/lmod/init/bash), or nothing
find_lmod_init() {
    local f
    for f in ${LMOD_PKG:+"$LMOD_PKG/init/bash"} /usr/share/lmod/lmod/init/bash \
             /usr/share/lmod/*/init/bash /opt/apps/lmod/lmod/init/bash /usr/local/lmod/lmod/init/bash; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}
if ! LMOD_INIT=$(find_lmod_init); then
    if [ "${K22_REQUIRE_LMOD:-0}" = 1 ]; then
        echo "test_modulefile.sh: FAIL: Lmod not found and K22_REQUIRE_LMOD=1 (Debian: apt-get install lmod)" >&2
        exit 1
    fi
    echo "test_modulefile.sh: SKIPPED: Lmod not found (no init/bash under /usr/share/lmod; Debian package lmod)"
    exit 0
fi
[ -f "$BUILD/cmake_install.cmake" ] || { echo "FAIL: $BUILD has no cmake_install.cmake (K22_BIN=$K22)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/k22-test-modulefile-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
PREFIX=$tmp/prefix
if ! cmake --install "$BUILD" --prefix "$PREFIX" >"$tmp/install.log" 2>&1; then
    echo "FAIL: cmake --install $BUILD --prefix $PREFIX:" >&2; cat "$tmp/install.log" >&2; exit 1
fi
[ -x "$PREFIX/bin/k22" ] && ok || fail "no executable $PREFIX/bin/k22 after install"
MF=$(find "$PREFIX/share/modulefiles/k22" -maxdepth 1 -name '*.lua' 2>/dev/null | head -n 1)
if [ -z "$MF" ]; then
    echo "FAIL: no $PREFIX/share/modulefiles/k22/<version>.lua after install:" >&2
    (cd "$PREFIX" && find . >&2); exit 1
fi
VERSION=$(basename "$MF" .lua)
if grep -q '@[A-Z_]*@' "$MF"; then fail "unfilled template fields in $MF: $(grep -o '@[A-Z_]*@' "$MF" | sort -u | tr '\n' ' ')"; else ok; fi
grep -qF "\"$PREFIX\"" "$MF" && ok || fail "$MF does not name the install prefix $PREFIX"

# Lmod in a clean child shell: its own caches and user files stay out of it
(
    set +u  # Lmod's shell functions read unset variables
    export LMOD_IGNORE_CACHE=1 LMOD_REDIRECT=no
    # shellcheck disable=SC1090
    . "$LMOD_INIT" >/dev/null 2>&1
    type module >/dev/null 2>&1 || { echo "FAIL: $LMOD_INIT defines no 'module' function" >&2; exit 1; }
    module use "$PREFIX/share/modulefiles" || { echo "FAIL: module use" >&2; exit 1; }
    # Lmod drops repeated PATH entries whenever it edits PATH (any modulefile, not this one), so
    # "restored exactly" is checked from a PATH without repeats
    PATH=$(printf '%s' "$PATH" | awk -v RS=: -v ORS=: '!seen[$0]++' | sed 's/:$//')
    PATH0=$PATH ROOT0=${K22_ROOT-unset} LOADED0=${LOADEDMODULES-}
    f=0
    if ! module load k22 2>"$tmp/load.err"; then
        echo "FAIL: module load k22: $(cat "$tmp/load.err")" >&2; exit 1
    fi
    [ "$(command -v k22)" = "$PREFIX/bin/k22" ] ||
        { echo "FAIL: after load, k22 is '$(command -v k22)', want $PREFIX/bin/k22" >&2; f=1; }
    [ "${K22_ROOT-unset}" = "$PREFIX" ] || { echo "FAIL: K22_ROOT='${K22_ROOT-unset}', want $PREFIX" >&2; f=1; }
    out=$(k22 --version 2>&1); rc=$?
    { [ $rc -eq 0 ] && [[ "$out" == *"$VERSION"* ]]; } ||
        { echo "FAIL: k22 --version: exit $rc, '$out' (want $VERSION)" >&2; f=1; }
    module whatis k22 2>&1 | grep -qF "Version: $VERSION" ||
        { echo "FAIL: module whatis k22 lacks 'Version: $VERSION'" >&2; f=1; }
    module unload k22 2>"$tmp/unload.err" || { echo "FAIL: module unload k22: $(cat "$tmp/unload.err")" >&2; f=1; }
    [ "$PATH" = "$PATH0" ] || { echo "FAIL: PATH after unload: '$PATH', before load: '$PATH0'" >&2; f=1; }
    [ "${K22_ROOT-unset}" = "$ROOT0" ] || { echo "FAIL: K22_ROOT after unload: '${K22_ROOT-unset}', want '$ROOT0'" >&2; f=1; }
    [ "${LOADEDMODULES-}" = "$LOADED0" ] ||
        { echo "FAIL: LOADEDMODULES after unload: '${LOADEDMODULES-}', want '$LOADED0'" >&2; f=1; }
    echo "k22 --version under the module: $out"
    exit $f
) && ok || fail "module load / run / unload (above)"

echo "test_modulefile.sh: $checks checks, $fails failed (Lmod $LMOD_INIT, modulefile $MF)"
[ "$fails" -eq 0 ]
