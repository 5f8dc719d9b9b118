#!/bin/sh
# ikto's postrm: let systemd forget the removed units. The configurations
# and keys in /etc/ikto are the operator's: neither remove nor purge deletes
# them (dpkg keeps the directory while it holds them). The ikto group stays
# too, as Debian's packages leave their system groups: its members and any
# file it owns outlive the package.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
