#!/bin/sh
# version.sh prints the package version of the checkout, in a form that dpkg
# orders correctly, from `git describe`:
#
#   v0.4.0                   0.4.0
#   v0.4.0, 3 commits on     0.4.0+3.gabc1234         (after 0.4.0, before 0.4.1)
#   v0.5.0-rc.1              0.5.0~rc.1               (before 0.5.0)
#   no v* tag at all         0.0.0~git20260101120000.abc1234  (commit time, UTC)
#   uncommitted changes      ...+dirty or ....dirty
#
# version.sh DESCRIBE maps a `git describe --tags --long --dirty` string
# instead of asking git; version.sh --test checks the table above.
set -eu

map() {
	desc=$1
	dirty=
	case $desc in *-dirty) dirty=1 desc=${desc%-dirty} ;; esac
	sha=${desc##*-g}
	rest=${desc%-g*}
	commits=${rest##*-}
	tag=${rest%-*}
	# A pre-release (v0.5.0-rc.1) sorts before its release with "~".
	v=$(printf '%s\n' "${tag#v}" | sed 's/-/~/')
	if [ "$commits" != 0 ]; then
		v="$v+$commits.g$sha"
	fi
	if [ -n "$dirty" ]; then
		case $v in *+*) v="$v.dirty" ;; *) v="$v+dirty" ;; esac
	fi
	printf '%s\n' "$v"
}

selftest() {
	fail=0
	while read -r in want; do
		got=$(map "$in")
		if [ "$got" != "$want" ]; then
			echo "version.sh: $in maps to $got, want $want" >&2
			fail=1
		fi
	done <<-TABLE
		v0.4.0-0-gabc1234 0.4.0
		v0.4.0-3-gabc1234 0.4.0+3.gabc1234
		v0.4.0-0-gabc1234-dirty 0.4.0+dirty
		v0.4.0-3-gabc1234-dirty 0.4.0+3.gabc1234.dirty
		v0.5.0-rc.1-0-gabc1234 0.5.0~rc.1
		v0.5.0-rc.1-2-gabc1234 0.5.0~rc.1+2.gabc1234
	TABLE
	return $fail
}

case ${1:-} in
--test) selftest; exit ;;
"") ;;
*) map "$1"; exit ;;
esac

if desc=$(git describe --tags --match 'v[0-9]*' --long --dirty 2>/dev/null); then
	map "$desc"
	exit
fi
# No release tag: order builds by commit time.
when=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S)
v="0.0.0~git$when.$(git rev-parse --short HEAD)"
case $(git describe --always --dirty) in *-dirty) v="$v.dirty" ;; esac
printf '%s\n' "$v"
