#!/bin/sh
# ikto's postrm: let systemd forget the removed units. The configurations
# and keys in /etc/ikto are the operator's: neither remove nor purge deletes
# them (dpkg keeps the directory while it holds them).
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
