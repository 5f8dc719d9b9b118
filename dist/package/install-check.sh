#!/usr/bin/env bash
# install-check.sh DEB: install the built package on this machine as an
# operator would, check what it installed, and remove and purge it again,
# whatever happens. CI runs it after make package; it needs root and dpkg,
# and refuses to touch a machine where ikto is already installed.
set -euo pipefail
deb=${1:?usage: install-check.sh dist/out/ikto_VERSION_ARCH.deb}

if dpkg -s ikto >/dev/null 2>&1; then
	echo "install-check: ikto is already installed here; not replacing it" >&2
	exit 1
fi
# The package makes the ikto group and leaves it on purge; a group this run
# made goes again.
group_before=$(getent group ikto || true)
cleanup() {
	dpkg -P ikto >/dev/null 2>&1 || true
	if [[ -z $group_before ]] && getent group ikto >/dev/null; then groupdel ikto; fi
}
trap cleanup EXIT
dpkg -i "$deb"
pkgver=$(dpkg-query -W -f '${Version}' ikto)

for b in /usr/bin/ikto-agent /usr/bin/ikto-init /usr/bin/ikto-admin \
	/usr/lib/ikto/ikto-hook-route /usr/lib/ikto/ikto-hook-firewall /usr/lib/ikto/ikto-hook-exec; do
	line=$("$b" --version)
	echo "$line"
	# One format everywhere: NAME VERSION (commit C, GOVERSION).
	want="^${b##*/} [^ ]+ [(]commit [^ ]+, go[0-9][^ ]*[)]\$"
	[[ $line =~ $want ]] || {
		echo "install-check: $b --version printed \"$line\"" >&2
		exit 1
	}
	# One version: -v says the same, and the package's version is the
	# binaries' in Debian's form (mk/version.sh --deb: the first "-" is "~").
	if [[ $("$b" -v) != "$line" ]]; then
		echo "install-check: $b -v printed \"$("$b" -v)\", --version \"$line\"" >&2
		exit 1
	fi
	v=$(cut -d' ' -f2 <<<"$line")
	if [[ ${v/-/\~} != "$pkgver" ]]; then
		echo "install-check: $b is version $v, the package $pkgver" >&2
		exit 1
	fi
done
# A man page per command, each found by man(1).
for page in ikto-agent ikto-init ikto-admin $(ikto-admin --help | awk '/^Available Commands:/{on=1; next} on && NF==0{on=0} on{print "ikto-admin-" $1}'); do
	[[ $page == ikto-admin-help || $page == ikto-admin-completion ]] && continue
	if ! man -w "$page" >/dev/null; then
		echo "install-check: no man page $page" >&2
		# Minimal images tell dpkg to drop man pages.
		grep -rs 'path-exclude.*/usr/share/(man|doc)' -E /etc/dpkg/dpkg.cfg.d/ >&2 &&
			echo "install-check: dpkg on this machine excludes man pages (above)" >&2
		exit 1
	fi
done
# The documentation: README, CHANGELOG, every docs/*.md, the license.
src=$(cd "$(dirname "$0")/../.." && pwd)
docs=(README.md CHANGELOG.md copyright)
for d in "$src"/docs/*.md; do docs+=("docs/${d##*/}"); done
for f in "${docs[@]}"; do
	[[ -s /usr/share/doc/ikto/$f ]] || {
		echo "install-check: /usr/share/doc/ikto/$f missing" >&2
		grep -rs 'path-exclude.*/usr/share/doc' /etc/dpkg/dpkg.cfg.d/ >&2 &&
			echo "install-check: dpkg on this machine excludes documentation (above)" >&2
		exit 1
	}
done
if ! getent group ikto >/dev/null; then
	echo "install-check: the package made no ikto group (the admin socket's readers)" >&2
	exit 1
fi
if [[ $(stat -c %a /etc/ikto) != 700 ]]; then
	echo "install-check: /etc/ikto has mode $(stat -c %a /etc/ikto), want 700" >&2
	exit 1
fi
for f in /usr/lib/systemd/system/ikto-agent.service /usr/lib/systemd/system/ikto-agent@.service \
	/usr/share/bash-completion/completions/ikto-admin /usr/share/zsh/vendor-completions/_ikto-admin \
	/usr/share/fish/vendor_completions.d/ikto-admin.fish; do
	[[ -s $f ]] || {
		echo "install-check: $f missing" >&2
		exit 1
	}
done
# The units as systemd reads them, the template as one of its instances.
if command -v systemd-analyze >/dev/null; then
	systemd-analyze verify /usr/lib/systemd/system/ikto-agent.service ikto-agent@ci.service
fi

dpkg -r ikto
dpkg -P ikto
trap - EXIT
cleanup
if [[ -e /usr/bin/ikto-agent || -e /etc/ikto || -e /usr/share/doc/ikto ]]; then
	echo "install-check: files left after dpkg -P ikto" >&2
	exit 1
fi
echo "install-check: $deb installed, checked and removed"
