#!/bin/sh
# Regenerates test/fixtures/vf-golden.json: the RTM_SETLINK payloads iproute2 sends for each VF
# setting, captured with strace on a veth (the kernel refuses VF ops there, after the bytes are sent).
set -eu
cd "$(dirname "$0")/.."
pf=plxgoldpf0
ip link add "$pf" type veth peer name "${pf}p"
trap 'ip link del "$pf" 2>/dev/null || true' EXIT
for args in "mac 02:aa:bb:cc:dd:ee" "vlan 100 qos 5" "vlan 100 qos 5 proto 802.1ad" "vlan 0" \
  "spoofchk on" "spoofchk off" "trust on" "trust off" "state enable" "state disable" "state auto" \
  "min_tx_rate 100 max_tx_rate 2000"; do
  # shellcheck disable=SC2086
  hex=$(strace -f -e trace=sendmsg -e write=3 ip link set "$pf" vf 3 $args 2>&1 | python3 -c '
import re, sys
msgs, cur = [], None
for line in sys.stdin.read().splitlines():
    if line.startswith("sendmsg(3"):
        cur = []
        msgs.append(cur)
    elif cur is not None and line.startswith(" | "):
        cur.append(re.match(r" \| [0-9a-f]{5}  (.{48})", line).group(1).replace(" ", ""))
print("".join(msgs[-1]))')
  echo "$args|$hex"
done | python3 -c '
import json, sys
out = []
for line in sys.stdin.read().splitlines():
    cmd, hexs = line.split("|")
    payload = bytes.fromhex(hexs)[16:]
    out.append({"iproute2": "ip link set PF vf 3 " + cmd, "pfIndex": int.from_bytes(payload[4:8], "little"), "payload": payload.hex()})
json.dump({"source": "iproute2 sendmsg payloads captured with strace -e write=3 (scripts/capture-vf-golden.sh); nlmsghdr removed (iproute2 sends RTM_NEWLINK, Plexus RTM_SETLINK: the payload is the same)", "messages": out}, open("test/fixtures/vf-golden.json", "w"), indent=1)
print(f"{len(out)} messages written")'
