#!/bin/sh
# version.sh prints ikto's version, the one every binary, hook, man page and
# package of a build carries. It is the only place the version is computed:
#
#   HEAD tagged vX.Y.Z (or vX.Y.Z-rc.1)   X.Y.Z (X.Y.Z-rc.1); the tag must name
#                                         the version of CHANGELOG.md's top heading
#   otherwise                             V-dev.N+gHASH, where V is the version
#                                         CHANGELOG.md's top heading names
#                                         ("## Unreleased (0.4.0)"), N the commits
#                                         since the last v* tag (since the root
#                                         commit without one), HASH the commit
#   uncommitted changes to tracked files  +dirty, or .dirty after a +gHASH
#
# These are semver versions: a build between two releases sorts after the
# last and before the next. version.sh --deb prints the same version in
# Debian's form, where "~" sorts before the release (0.4.0~dev.N+gHASH);
# the package carries that form (version.sh --deb VERSION maps a version
# given to make, `make package VERSION=1.2.3`). Outside a git checkout (a source tarball)
# the version is V-dev, and `make VERSION=...` overrides it.
set -eu
cd "$(dirname "$0")/.."

# Debian sorts "~" before anything, as semver sorts a pre-release before
# its release; the first "-" starts semver's pre-release part.
debian() {
	printf '%s\n' "$1" | sed 's/-/~/'
}
case ${1:-} in
--deb) [ $# -lt 2 ] || { debian "$2"; exit; } ;;
"") ;;
*) echo "usage: mk/version.sh [--deb [VERSION]]" >&2; exit 2 ;;
esac

die() {
	echo "mk/version.sh: $*" >&2
	exit 1
}

# The version CHANGELOG.md's first "## " heading names.
top=$(grep -m1 '^## ' CHANGELOG.md) || die "CHANGELOG.md has no \"## \" heading; its top heading names the version in the making, e.g. \"## Unreleased (0.4.0)\""
base=$(printf '%s\n' "$top" | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)
[ -n "$base" ] ||
	die "CHANGELOG.md's top heading \"$top\" names no version X.Y.Z; name the version in the making, e.g. \"## Unreleased (0.4.0)\""

if ! git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	v="$base-dev"
else
	hash=$(git rev-parse --short HEAD)
	dirty=
	if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
		dirty=dirty
	fi
	if tag=$(git describe --tags --exact-match --match 'v[0-9]*.[0-9]*.[0-9]*' HEAD 2>/dev/null); then
		v=${tag#v}
		case $v in "$base" | "$base"-*) ;; *)
			die "HEAD is tagged $tag but CHANGELOG.md's top heading names $base (\"$top\"); a release's heading names its version"
			;;
		esac
		[ -z "$dirty" ] || v="$v+dirty"
	else
		if desc=$(git describe --tags --match 'v[0-9]*.[0-9]*.[0-9]*' --long HEAD 2>/dev/null); then
			last=${desc%-*-g*}
			n=${desc%-g*}
			n=${n##*-}
			# A released version (no pre-release part) that is not below
			# the CHANGELOG's would make this build sort before it.
			case $last in *-*) ;; *)
				if [ "$(printf '%s\n%s\n' "${last#v}" "$base" | sort -V | tail -n1)" = "${last#v}" ]; then
					die "CHANGELOG.md's top heading names $base (\"$top\"), but $last is released; open the next version's heading, e.g. \"## Unreleased (X.Y.Z)\" above it"
				fi
				;;
			esac
		else
			n=$(git rev-list --count HEAD)
		fi
		v="$base-dev.$n+g$hash"
		[ -z "$dirty" ] || v="$v.dirty"
	fi
fi

if [ "${1:-}" = --deb ]; then
	debian "$v"
else
	printf '%s\n' "$v"
fi
