#!/bin/sh
# ikto's prerm stops nothing: an agent the operator started keeps running
# (from the removed binary) until the operator stops it, and stopping it
# would not take the host off the mesh anyway: its record, its WireGuard
# device and its peers stay, by design. To take a host off the mesh, stop
# and disable the agent, evict it (ikto-admin evict ADDRESS) and delete the
# device (ip link del wg-ikto) before removing the package.
set -e
if [ -d /run/systemd/system ] && systemctl is-active --quiet 'ikto-agent.service' 'ikto-agent@*.service' 2>/dev/null; then
	echo "ikto: ikto-agent is running and keeps running until you stop it (systemctl disable --now ikto-agent)"
fi
exit 0
