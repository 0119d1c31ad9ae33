#!/usr/bin/env bash
# Builds our guests (the protocol stubs of this workspace) for wasm32-wasip2, reproducibly, and
# writes <guest>/<guest>.wasm and <guest>/<guest>.wasm.sha256 (sha256sum's format).
#
#   stubs/guests/build.sh           build and write the committed components
#   stubs/guests/build.sh --check   build into a temporary directory and fail if a committed
#                                   component differs from the fresh build (or is missing)
#
# Reproducible: release profile, `--locked` (stubs/guests/Cargo.lock), and every path that could
# reach the binary (this checkout's stubs/ directory, cargo's home, the target directory) remapped
# to fixed names with --remap-path-prefix, so that a clone in another directory gives the same
# bytes. The compiler is part of the input: the committed bytes were built with the rustc named
# in RUSTC_VERSION below; another version is refused (it would give other bytes).
# Cargo's target directory: $RETHINK_GUEST_TARGET_DIR, else stubs/guests/target (never the
# caller's CARGO_TARGET_DIR, which is for the host workspace).
set -euo pipefail

RUSTC_VERSION="rustc 1.95.0"
GUESTS=(probe default registry archive echo-connector)

here="$(cd "$(dirname "$0")" && pwd)"
stubs="$(dirname "$here")"
cargo_home="$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd)"
target="${RETHINK_GUEST_TARGET_DIR:-$here/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

found="$(rustc -V)"
if [[ "$found" != "$RUSTC_VERSION "* ]]; then
    echo "build.sh: the committed components were built with $RUSTC_VERSION; this is $found" >&2
    exit 1
fi

# One flag per line of CARGO_ENCODED_RUSTFLAGS (0x1f-separated), so that paths with spaces work;
# it replaces RUSTFLAGS and any build.rustflags the caller has.
sep=$'\x1f'
flags="--remap-path-prefix=$stubs=/rethink/stubs${sep}--remap-path-prefix=$cargo_home=/cargo${sep}--remap-path-prefix=$target=/target"
export CARGO_ENCODED_RUSTFLAGS="$flags"
export CARGO_TARGET_DIR="$target"
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER

# One build per guest: cargo unifies dependency features across the packages of one build, so
# a guest's bytes must not depend on which other guests are built with it.
for g in "${GUESTS[@]}"; do
    (cd "$here" && cargo build --quiet --locked --release --target wasm32-wasip2 -p "rethink-stub-$g")
    cp "$target/wasm32-wasip2/release/rethink_stub_${g//-/_}.wasm" "$target/rethink_stub_$g.wasm"
done

if [ "$check" = 1 ]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
else
    out=""
fi

status=0
for g in "${GUESTS[@]}"; do
    built="$target/rethink_stub_$g.wasm"
    if [ "$check" = 1 ]; then
        dest="$out/$g.wasm"
    else
        dest="$here/$g/$g.wasm"
    fi
    cp "$built" "$dest"
    (cd "$(dirname "$dest")" && sha256sum "$g.wasm" > "$g.wasm.sha256")
    if [ "$check" = 1 ]; then
        if cmp -s "$dest" "$here/$g/$g.wasm" && cmp -s "$dest.sha256" "$here/$g/$g.wasm.sha256"; then
            echo "build.sh: $g: committed component matches the fresh build ($(cut -d' ' -f1 "$dest.sha256"))"
        else
            echo "build.sh: $g: STALE: the committed $g/$g.wasm (or its .sha256) differs from a fresh build ($(cut -d' ' -f1 "$dest.sha256")); run stubs/guests/build.sh and commit" >&2
            status=1
        fi
    else
        echo "build.sh: $g: wrote $g/$g.wasm ($(wc -c < "$dest") bytes, sha256 $(cut -d' ' -f1 "$dest.sha256"))"
    fi
done
exit "$status"
