#!/bin/sh
# ikto's postinst: make the ikto system group, whose members may read an
# agent's status (ikto-admin status) without root, and let systemd see the
# new or changed units. It never enables, starts or restarts an agent: an agent needs a
# configuration in /etc/ikto that only the operator writes (ikto-init), and an
# upgrade leaves a running agent on the old binary until the operator
# restarts it (a kernel device keeps its peers across the restart).
set -e
if ! getent group ikto >/dev/null; then
	groupadd --system ikto
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if systemctl is-active --quiet 'ikto-agent.service' 'ikto-agent@*.service' 2>/dev/null; then
		echo "ikto: a running ikto-agent still runs the previous binary; restart it when convenient (systemctl restart ikto-agent)"
	fi
fi
exit 0
