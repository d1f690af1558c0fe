#!/usr/bin/env bash
# A kumo cluster of N machines on this one (run as root): the control plane on the host, each
# agent in a network namespace of its own on a "datacenter" bridge, as the e2e tests build it.
#
#   scripts/dev-cluster.sh up 3     # control plane + node0..node2
#   scripts/dev-cluster.sh down     # kumo down on every node, then everything this made
#
# KUMO: the kumo binary (default: target/debug/kumo, else kumo on PATH).
# KUMO_DEV_DIR: where the data dirs and logs go (default /var/lib/kumo-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${KUMO_DEV_DIR:-/var/lib/kumo-dev}
BRIDGE=kdev0
NET=10.127.0          # the datacenter: host .1, node i .(10+i)
PORT=7400
if [ -z "${KUMO:-}" ]; then
  if [ -x target/debug/kumo ]; then KUMO=$PWD/target/debug/kumo; else KUMO=$(command -v kumo); fi
fi

die() { echo "dev-cluster: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (it makes namespaces, links and cgroups)"

node_flags() { # the agent's node flags of node $1, which `kumo down` takes too
  echo "--data-dir $DIR/node$1 --cgroup-parent kumo-dev-node$1 --pod-bridge kdevp$1 --pod-cidr 10.88.$1.0/24"
}

up() {
  local n=$1
  [[ $n =~ ^[1-9]$ ]] || die "up N: N is 1 to 9"
  [ ! -e "$DIR/nodes" ] || die "a cluster is up ($DIR/nodes): run down first"
  mkdir -p "$DIR" && chmod 0700 "$DIR"
  echo "$n" > "$DIR/nodes"
  # A MAC of its own: an unset bridge MAC follows its lowest port's and changes as nodes are
  # plugged in, and a node that cached the old one is cut off from the control plane.
  ip link add $BRIDGE address 02:6b:64:de:00:01 type bridge
  ip addr add $NET.1/24 dev $BRIDGE
  ip link set $BRIDGE up
  nohup "$KUMO" server --data-dir "$DIR/server" --listen $NET.1:$PORT --tls-san $NET.1 \
    > "$DIR/server.log" 2>&1 &
  echo $! > "$DIR/server.pid"
  export KUMO_CONFIG=$DIR/server/admin.config
  for _ in $(seq 100); do [ -s "$KUMO_CONFIG" ] && break; sleep 0.2; done
  [ -s "$KUMO_CONFIG" ] || die "the control plane did not start: see $DIR/server.log"
  for i in $(seq 0 $((n - 1))); do
    ip netns add kumo-dev-node$i
    ip link add kdev0n$i type veth peer name eth0 netns kumo-dev-node$i
    ip link set kdev0n$i master $BRIDGE up
    ip -n kumo-dev-node$i link set lo up
    ip -n kumo-dev-node$i addr add $NET.$((10 + i))/24 dev eth0
    ip -n kumo-dev-node$i link set eth0 up
    ip -n kumo-dev-node$i route add default via $NET.1
    join=$("$KUMO" token create dev-node$i --join --ttl 1h | sed -n 's/.*--join \([^ ]*\).*/\1/p')
    [ -n "$join" ] || die "no join token for node$i"
    # nsenter, not `ip netns exec`: that one remounts /sys, which hides the cgroups. The node
    # gets its own hostname (a UTS namespace), as a machine has.
    # shellcheck disable=SC2046,SC2016
    KUMO_JOIN_TOKEN=$join nohup nsenter --net=/run/netns/kumo-dev-node$i -- unshare --uts -- \
      sh -c 'hostname "$0" && exec "$@"' node$i "$KUMO" agent \
      --server https://$NET.1:$PORT --ca-file "$DIR/server/pki/ca.crt" --node-name node$i \
      --listen $NET.$((10 + i)):10250 --advertise-address $NET.$((10 + i)) \
      $(node_flags "$i") > "$DIR/node$i.log" 2>&1 &
    echo $! > "$DIR/node$i.pid"
  done
  cat <<EOF
kumo dev cluster: control plane https://$NET.1:$PORT, nodes node0..node$((n - 1)) at $NET.10.., logs in $DIR
  export KUMO_CONFIG=$KUMO_CONFIG
  kumo get nodes                                   # Ready within a few seconds
  nsenter --net=/run/netns/kumo-dev-node0 -- sh    # a shell on node0's network
  $0 down    # removes everything
EOF
}

down() {
  [ -e "$DIR/nodes" ] || { echo "dev-cluster: nothing to remove"; return 0; }
  local n
  n=$(cat "$DIR/nodes")
  for i in $(seq 0 $((n - 1))); do
    if [ -e /run/netns/kumo-dev-node$i ]; then
      echo "node$i:"
      # shellcheck disable=SC2046
      nsenter --net=/run/netns/kumo-dev-node$i -- "$KUMO" down $(node_flags "$i") || true
      ip netns del kumo-dev-node$i
    fi
    ip link del kdev0n$i 2>/dev/null || true
  done
  if [ -e "$DIR/server.pid" ]; then
    local pid
    pid=$(cat "$DIR/server.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  ip link del $BRIDGE 2>/dev/null || true
  rm -rf "$DIR"
  echo "dev-cluster: removed $n nodes, the control plane, $BRIDGE and $DIR"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down ;;
  *) die "usage: $0 up N | down" ;;
esac
