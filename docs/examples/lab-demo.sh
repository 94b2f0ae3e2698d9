#!/bin/bash
# Docs demo (docs/operate.md): 3 lbd members + client + BIRD router in network namespaces
# (prefix docsd-), as root, after `cargo build --bins`. Outputs land in /tmp/docsdemo/run.
# Only namespaces it creates are touched; everything it starts is killed by PID on exit.
set -u
P=docsd
D=/tmp/docsdemo/run
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$REPO/target/debug
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for n in lan a b c cl r; do ip netns del $P-$n 2>/dev/null; done
}
trap cleanup EXIT
rm -rf $D; mkdir -p $D
ip netns add $P-lan
ip -n $P-lan link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
ip -n $P-lan link set br0 up

declare -A ADDR=([a]=10.10.100.3 [b]=10.10.100.4 [c]=10.10.100.5 [cl]=10.10.100.9 [r]=10.10.100.1)
declare -A NAME=([a]=worker-1 [b]=worker-2 [c]=worker-3)
for n in a b c cl r; do
  ip netns add $P-$n
  ip link add v$P$n type veth peer name eth0 netns $P-$n
  ip link set v$P$n netns $P-lan
  ip -n $P-lan link set v$P$n master br0 up
  ip -n $P-$n addr add ${ADDR[$n]}/24 dev eth0
  ip -n $P-$n link set eth0 up
  ip -n $P-$n link set lo up
  ip netns exec $P-$n sysctl -qw net.ipv4.conf.all.arp_ignore=1
done
head -c 32 /dev/urandom | base64 > $D/cluster.key; chmod 600 $D/cluster.key
for n in a b c; do
  mkdir -p $D/$n/state
  cat > $D/$n/lb.toml <<TOML
[node]
name = "${NAME[$n]}"
state_dir = "$D/$n/state"

[cluster]
members = { worker-1 = "10.10.100.3:7946", worker-2 = "10.10.100.4:7946", worker-3 = "10.10.100.5:7946" }
secret_file = "$D/cluster.key"

[[pool]]
name = "ip-space-1"
protocol = "layer2"
addresses = ["10.10.100.200-10.10.100.210"]

[[pool]]
name = "ip-pool-1"
protocol = "bgp"
addresses = ["172.19.100.0/24"]

[[bgp_peer]]
my_asn = 64500
peer_asn = 64500
address = "10.10.100.1"
hold_time = "9s"

[[service]]
name = "kube-apiserver"
ip = "10.10.100.200"
ports = ["6443/tcp"]

[[service]]
name = "ingress"
pool = "ip-pool-1"
ports = ["80/tcp", "443/tcp"]

[log]
format = "text"
TOML
done
# a private system bus per node, for its lbd and lbctl (tests/fixtures/dbus/bus.conf.in)
for n in a b c; do
  sed -e "s#@SOCKET@#$D/bus-$n.sock#" -e "s#@POLICY@#$REPO/packaging/dbus/org.lb.Daemon1.conf#" \
    $REPO/tests/fixtures/dbus/bus.conf.in > $D/bus-$n.conf
  dbus-daemon --config-file=$D/bus-$n.conf --nofork --print-address=1 > $D/bus-$n.addr 2>/dev/null &
  PIDS+=($!)
done
sleep 0.5
declare -A BUSN
for n in a b c; do BUSN[$n]=$(head -1 $D/bus-$n.addr); done
BUS=${BUSN[a]}
start_lbd() { # n
  local n=$1
  ip netns exec $P-$n env DBUS_SYSTEM_BUS_ADDRESS=${BUSN[$n]} $BIN/lbd --config $D/$n/lb.toml >> $D/$n/log 2>&1 &
  echo $! > $D/$n/pid
  PIDS+=($!)
}
lbctl() { $BIN/lbctl --bus $BUS "$@"; }
lbctl_on() { local n=$1; shift; $BIN/lbctl --bus ${BUSN[$n]} "$@"; }
for n in a b c; do start_lbd $n; done
sleep 3
run() { echo "\$ $*"; "$@"; echo "[rc=$?]"; echo; }
{
run lbctl status
run lbctl cluster
run lbctl services
run lbctl pools
run lbctl peers
} > $D/out1.txt 2>&1
# BIRD router
mkdir -p $D/bird
cat > $D/bird/bird.conf <<BIRD
router id 10.10.100.1;
protocol device {}
protocol direct { ipv4; interface "eth0"; }
protocol bgp worker1 { local 10.10.100.1 as 64500; neighbor 10.10.100.3 as 64500; ipv4 { import all; export none; }; }
protocol bgp worker2 { local 10.10.100.1 as 64500; neighbor 10.10.100.4 as 64500; ipv4 { import all; export none; }; }
protocol bgp worker3 { local 10.10.100.1 as 64500; neighbor 10.10.100.5 as 64500; ipv4 { import all; export none; }; }
BIRD
ip netns exec $P-r bird -f -c $D/bird/bird.conf -s $D/bird/ctl -P $D/bird/pid > $D/bird/log 2>&1 &
PIDS+=($!)
sleep 8
{
run lbctl peers
run ip netns exec $P-r birdc -s $D/bird/ctl show route
run ip netns exec $P-cl arping -c 2 -I eth0 10.10.100.200
run ip netns exec $P-a curl -s 127.0.0.1:7472/metrics
run ip netns exec $P-a curl -s -i 127.0.0.1:7472/ready
run lbctl status --json
run lbctl services --json
} > $D/out2.txt 2>&1
# bad reload
cp $D/a/lb.toml $D/a/lb.toml.good
sed -i 's/hold_time = "9s"/hold_time = "2s"/' $D/a/lb.toml
{
run $BIN/lbctl check-config $D/a/lb.toml
run lbctl reload
run lbctl status
} > $D/out3.txt 2>&1
cp $D/a/lb.toml.good $D/a/lb.toml
echo '[[pool]]
name = "ip-space-2"
protocol = "layer2"
addresses = ["10.10.100.220/30"]' >> $D/a/lb.toml
{
run lbctl reload
run lbctl pools
} >> $D/out3.txt 2>&1
# failover
LEADER=$(lbctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster"]["leader"])')
for n in a b c; do [ "${NAME[$n]}" = "$LEADER" ] && LN=$n; done
{
echo "leader: $LEADER ($LN)"
run lbctl_on $LN cluster
run lbctl_on $LN services
run lbctl_on $LN status
} > $D/out4.txt 2>&1
OWNER=$(lbctl_on $LN services --json | python3 -c 'import json,sys; print([s for s in json.load(sys.stdin) if "10.10.100.200" in s["ips"]][0]["announced_by"][0])')
for n in a b c; do [ "${NAME[$n]}" = "$OWNER" ] && ON=$n; done
echo "owner: $OWNER ($ON)" >> $D/out4.txt
ip netns exec $P-cl arping -c 1 -I eth0 10.10.100.200 >> $D/out4.txt
ip netns exec $P-cl ping -c 60 -i 0.05 10.10.100.200 > $D/ping-term.txt 2>&1 &
sleep 1
kill -TERM "$(cat $D/$ON/pid)"
sleep 3
ip netns exec $P-cl arping -c 1 -I eth0 10.10.100.200 >> $D/out4.txt
# remaining leader view
for n in a b c; do [ $n != $ON ] && kill -0 "$(cat $D/$n/pid)" 2>/dev/null && ALIVE=$n; done
L2=$(lbctl_on $ALIVE status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster"]["leader"])')
for n in a b c; do [ "${NAME[$n]}" = "$L2" ] && LN2=$n; done
{
run lbctl_on $LN2 cluster
run lbctl_on $LN2 services
} >> $D/out4.txt 2>&1
# restart the stopped one, then SIGKILL the current owner
start_lbd $ON
sleep 3
OWNER2=$(lbctl_on $LN2 services --json | python3 -c 'import json,sys; print([s for s in json.load(sys.stdin) if "10.10.100.200" in s["ips"]][0]["announced_by"][0])')
for n in a b c; do [ "${NAME[$n]}" = "$OWNER2" ] && ON2=$n; done
echo "owner before SIGKILL: $OWNER2 ($ON2)" >> $D/out4.txt
kill -KILL "$(cat $D/$ON2/pid)"
sleep 3
for n in a b c; do [ $n != $ON2 ] && ALIVE=$n; done
L3=$(lbctl_on $ALIVE status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster"]["leader"])')
for n in a b c; do [ "${NAME[$n]}" = "$L3" ] && LN3=$n; done
{
run lbctl_on $LN3 cluster
run lbctl_on $LN3 services
} >> $D/out4.txt 2>&1
sleep 1
for n in a b c; do cp $D/$n/log $D/log-$n.txt; done
cp $D/bird/log $D/bird-log.txt
