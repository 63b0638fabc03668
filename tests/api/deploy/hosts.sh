#!/usr/bin/env bash
# Hosts of the deploy test's own: network namespaces on one bridge, each with an sshd bound
# to its address. Addresses come from 198.18.0.0/15 (set aside for benchmarks), a /24 the
# test picks; nothing routes anywhere else (no default route, no forwarding).
#
#   hosts.sh up   TAG NET DIR COUNT   # bridge ev<TAG>b = NET.1/24; host i: ns ev<TAG>h<i> = NET.<10+i>
#   hosts.sh down TAG DIR COUNT       # kills every process in the namespaces, removes all it made
#
# DIR receives the ssh client key (DIR/id), the host keys and the sshd configs and logs.
set -euo pipefail
step=$1 tag=$2

down() {
  local dir=$1 count=$2 i ns
  for i in $(seq 1 "$count"); do
    ns="ev${tag}h$i"
    if ip netns list | grep -qw "$ns"; then
      # shellcheck disable=SC2046
      kill -KILL $(ip netns pids "$ns") 2>/dev/null || true
      ip netns delete "$ns" || true
    fi
    ip link delete "ev${tag}v$i" 2>/dev/null || true
  done
  ip link delete "ev${tag}b" 2>/dev/null || true
  [ -f "$dir/sshd.pids" ] && xargs -r kill -KILL <"$dir/sshd.pids" 2>/dev/null || true
  return 0
}

case "$step" in
  up)
    net=$3 dir=$4 count=$5
    down "$dir" "$count"
    mkdir -p "$dir" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$dir/id" <<<y >/dev/null
    cp "$dir/id.pub" "$dir/authorized_keys"
    ip link add "ev${tag}b" type bridge
    ip addr add "$net.1/24" dev "ev${tag}b"
    ip link set "ev${tag}b" up
    for i in $(seq 1 "$count"); do
      ns="ev${tag}h$i" addr="$net.$((10 + i))"
      ip netns add "$ns"
      ip link add "ev${tag}v$i" type veth peer name "ev${tag}p$i"
      ip link set "ev${tag}v$i" master "ev${tag}b" up
      ip link set "ev${tag}p$i" netns "$ns"
      ip -n "$ns" link set lo up
      ip -n "$ns" link set "ev${tag}p$i" name eth0
      ip -n "$ns" addr add "$addr/24" dev eth0
      ip -n "$ns" link set eth0 up
      ssh-keygen -q -t ed25519 -N '' -f "$dir/host$i" <<<y >/dev/null
      cat >"$dir/sshd$i.conf" <<EOF
ListenAddress $addr
HostKey $dir/host$i
PidFile $dir/sshd$i.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100
EOF
      ip netns exec "$ns" /usr/sbin/sshd -f "$dir/sshd$i.conf" -E "$dir/sshd$i.log"
      # sshd writes its pid file after it has gone to the background, so under load the
      # file may not be there yet when the command returns: wait for it (at most 20 s).
      for _ in $(seq 1 200); do [ -s "$dir/sshd$i.pid" ] && break; sleep 0.1; done
      cat "$dir/sshd$i.pid" >>"$dir/sshd.pids"
    done
    # Each sshd answers before the test goes on.
    for i in $(seq 1 "$count"); do
      for _ in $(seq 1 50); do
        ssh -q -i "$dir/id" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
          -o ConnectTimeout=2 "root@$net.$((10 + i))" true && break
        sleep 0.1
      done
    done
    ;;
  down)
    down "$3" "$4"
    ;;
  *)
    echo "unknown step: $step" >&2
    exit 2
    ;;
esac
