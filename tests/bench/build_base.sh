#!/bin/sh
# make bench-compare's base: builds luasmtpd from commit BASE in a
# temporary git worktree (never git stash: the stash is shared by every
# worktree) with that commit's own Makefile, whatever its core/ layout,
# and keeps the binary and that commit's lua/ folder as
#   OUT/bin/luasmtpd  OUT/lua/
# (the binary finds its Lua modules at bin/../lua). OUT/commit names
# what is there; a second run for the same commit rebuilds nothing.
# usage: tests/bench/build_base.sh BASE [OUT]   (OUT default build/base)
set -eu
base=${1:?usage: build_base.sh BASE [OUT]}
out=${2:-build/base}
commit=$(git rev-parse --verify --quiet "$base^{commit}") || {
	echo "build_base.sh: $base is not a commit" >&2
	exit 1
}
if [ -x "$out/bin/luasmtpd" ] && [ "$(cat "$out/commit" 2>/dev/null)" = "$commit" ]; then
	echo "base $commit already built in $out"
	exit 0
fi
tree=$(mktemp -d "${TMPDIR:-/tmp}/luasmtpd-base-XXXXXX")
cleanup() { git worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"; }
trap cleanup EXIT
git worktree add --detach --quiet "$tree" "$commit"
echo "building base $commit in $tree"
make -C "$tree" -j2 build/luasmtpd >"$tree.log" 2>&1 || {
	tail -20 "$tree.log" >&2
	rm -f "$tree.log"
	echo "build_base.sh: make build/luasmtpd failed at $commit" >&2
	exit 1
}
rm -f "$tree.log"
rm -rf "$out"
mkdir -p "$out/bin"
cp "$tree/build/luasmtpd" "$out/bin/luasmtpd"
cp -R "$tree/lua" "$out/lua"
echo "$commit" >"$out/commit"
echo "base $commit built: $out/bin/luasmtpd"
