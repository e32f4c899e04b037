#!/usr/bin/env bash
# Pack this machine's Redis and PostgreSQL for the GPU machine (which has neither and no
# network): redis-server, PostgreSQL's bin/, lib/ and share/ (the paths kept as they are, so
# Postgres finds its share folder relative to its binaries), and every library ldd lists
# for them except glibc's. Writes .carry/services.tar.xz; bench/gpu/services.sh unpacks and
# starts them there.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
PG=$(ls -d /usr/lib/postgresql/*/ | sort -V | tail -1); PG=${PG%/}
V=$(basename "$PG")
mkdir -p "$W/root"
copy() { mkdir -p "$W/root$(dirname "$1")"; cp -a "$1" "$W/root$1"; }
# Debian's redis-server is a link to redis-check-rdb (one binary that looks at its name):
# copy the binary under the link's name.
mkdir -p "$W/root/usr/bin" && cp -L "$(command -v redis-server)" "$W/root/usr/bin/redis-server"
for d in "$PG/bin" "$PG/lib" "/usr/share/postgresql/$V"; do copy "$d"; done
# What the server never needs here: JIT bitcode and its LLVM, manuals, other extensions.
rm -rf "$W/root$PG/lib/bitcode" "$W/root$PG"/lib/llvmjit* "$W/root/usr/share/postgresql/$V/man"
find "$W/root/usr/share/postgresql/$V/extension" -type f ! -name 'plpgsql*' -delete
# Libraries the binaries need, except the C library's own.
mkdir -p "$W/root/libs"
for f in "$(command -v redis-server)" "$PG"/bin/* "$W/root$PG"/lib/*.so; do
  ldd "$f" 2>/dev/null | awk '/=> \// {print $3}'
done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libLLVM[^/]*)\.so' | while read -r lib; do cp -L "$lib" "$W/root/libs/"; done
echo "$PG" > "$W/root/pg-path"
mkdir -p .carry
tar -C "$W/root" -cJf .carry/services.tar.xz .
echo "wrote .carry/services.tar.xz ($(du -h .carry/services.tar.xz | cut -f1))"
