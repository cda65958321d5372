#!/usr/bin/env bash
# storm.sh: N clients connect at once to `warren server` and to `openvpn` (same server.conf).
#
# The clients are warren client engines driven in one process (target/release/examples/storm)
# from a second namespace, each with its own UDP socket. For each server it reports the time
# until all N completed the handshake, handshakes per second, the time until every client had
# an ICMP echo answered through the tunnel, and the server's memory per connected idle client
# (VmRSS after the storm minus VmRSS before, divided by N).
#
# Usage (as root): bench/storm.sh [-n N] [--warren PATH] [--storm PATH] [--only warren|openvpn]
# Build first: cargo build --release -p warren-cli --bin warren --example storm
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

N=200
WARREN="target/release/warren"
STORM="target/release/examples/storm"
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n) N="$2"; shift 2 ;;
        --warren) WARREN="$2"; shift 2 ;;
        --storm) STORM="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
bench_require openvpn ip openssl
[ -x "$WARREN" ] && [ -x "$STORM" ] || { echo "build first: cargo build --release -p warren-cli --bin warren --example storm" >&2; exit 1; }
WARREN=$(realpath "$WARREN"); STORM=$(realpath "$STORM")

ID=$$
NS_S="ws${ID}s"; NS_C="ws${ID}c"; IF_S="ws${ID}a"; IF_C="ws${ID}b"
WORK="$(mktemp -d /tmp/warren-storm.XXXXXX)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$NS_C" 2>/dev/null || true
    ip netns del "$NS_S" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[storm] $*" >&2; }

bench_pki "$WORK"

bench_link "$NS_S" "$NS_C" "$IF_S" "$IF_C"

# One certificate for all clients: duplicate-cn. A /22 pool holds N <= 1000.
cat > "$WORK/server.conf" <<CONF
port 1194
proto udp
dev tunstorm
dev-type tun
ca $WORK/ca.crt
cert $WORK/server.crt
key $WORK/server.key
dh none
tls-crypt $WORK/ta.key
topology subnet
server 10.8.0.0 255.255.252.0
keepalive 10 120
duplicate-cn
max-clients 1024
verb 1
CONF
cat > "$WORK/client.ovpn" <<CONF
client
dev tun
proto udp
remote 198.18.0.1 1194
ca $WORK/ca.crt
cert $WORK/client.crt
key $WORK/client.key
tls-crypt $WORK/ta.key
remote-cert-tls server
CONF


declare -A RESULT
run() {
    local kind="$1"; shift
    ip netns exec "$NS_S" "$@" > "$WORK/$kind.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    local i
    for i in $(seq 100); do
        ip netns exec "$NS_S" ip link show tunstorm >/dev/null 2>&1 && break
        sleep 0.1
    done
    sleep 0.5
    local rss0 cpu0; rss0=$(status_kb "$pid" VmRSS); cpu0=$(cpu_ticks "$pid")
    log "$kind: $N clients"
    ip netns exec "$NS_C" timeout 300 "$STORM" --server 198.18.0.1:1194 --profile "$WORK/client.ovpn" -n "$N" --timeout 240 \
        > "$WORK/$kind.storm" 2>&1 || true
    cat "$WORK/$kind.storm" >&2
    local rss1 cpu1; rss1=$(status_kb "$pid" VmRSS); cpu1=$(cpu_ticks "$pid")
    local hz; hz=$(getconf CLK_TCK)
    RESULT[$kind.connected]=$(awk '/^connected /{print $2}' "$WORK/$kind.storm")
    RESULT[$kind.passed]=$(awk '/^passed traffic/{print $3}' "$WORK/$kind.storm")
    RESULT[$kind.t_conn]=$(awk '/^all connected/{print $4}' "$WORK/$kind.storm")
    RESULT[$kind.t_traffic]=$(awk '/^all traffic/{print $4}' "$WORK/$kind.storm")
    RESULT[$kind.hs]=$(awk '/^handshakes\/s/{print $2}' "$WORK/$kind.storm")
    RESULT[$kind.kib_per_client]=$(awk -v a="$rss0" -v b="$rss1" -v n="$N" 'BEGIN{printf "%.1f", (b-a)/n}')
    RESULT[$kind.cpu]=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$hz" 'BEGIN{printf "%.2f", (b-a)/hz}')
    RESULT[$kind.rss]=$rss1
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

[ "$ONLY" = openvpn ] || run warren "$WARREN" server --config "$WORK/server.conf"
[ "$ONLY" = warren ] || run openvpn openvpn --config "$WORK/server.conf"

printf '\n%-34s %12s %12s\n' "storm of $N clients" warren openvpn
for k in connected:"connected" passed:"passed traffic" t_conn:"time until all connected (s)" \
         t_traffic:"time until all passed traffic (s)" hs:"handshakes per second" \
         cpu:"server CPU during storm (s)" rss:"server RSS after (KiB)" kib_per_client:"server KiB per idle client"; do
    key=${k%%:*}; label=${k#*:}
    printf '%-34s %12s %12s\n' "$label" "${RESULT[warren.$key]:--}" "${RESULT[openvpn.$key]:--}"
done
printf '\nmachine: %s cores, %s, kernel %s, load at start %s\n' "$(nproc)" \
    "$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')" "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)"
