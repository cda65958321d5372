#!/usr/bin/env bash
# Builds the Debian package of warren (target/debian/warren_VERSION-1_ARCH.deb) with
# cargo-deb: the release binary, the systemd units of contrib/systemd, and man pages
# generated from the command-line definitions. Not part of CI.
#
#   contrib/build-deb.sh            # installs cargo-deb from crates.io if it is missing
#   dpkg -i target/debian/warren_*.deb
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "+ cargo install cargo-deb --locked"
    cargo install cargo-deb --locked
fi

target_dir="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

echo "+ cargo build --release -p warren-cli"
cargo build --release -p warren-cli

# cargo-deb maps the asset paths "target/release/..." to the real target directory.
echo "+ warren man-pages $target_dir/release/man"
rm -rf "$target_dir/release/man"
"$target_dir/release/warren" man-pages "$target_dir/release/man"

# The release profile keeps line tables for backtraces; the package ships a stripped binary.
echo "+ cargo deb -p warren-cli --no-build --strip"
cargo deb -p warren-cli --no-build --strip "$@"
