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
trap 'dpkg -P ikto >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb"

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
done
if ! man -w ikto-agent; then
	# Minimal images tell dpkg to drop man pages.
	grep -rs 'path-exclude.*/usr/share/man' /etc/dpkg/dpkg.cfg.d/ >&2 &&
		echo "install-check: dpkg on this machine excludes man pages (above)" >&2
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
if [[ -e /usr/bin/ikto-agent || -e /etc/ikto ]]; then
	echo "install-check: files left after dpkg -P ikto" >&2
	exit 1
fi
echo "install-check: $deb installed, checked and removed"
