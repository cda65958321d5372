#!/usr/bin/env bash
# soak.sh: a long churn run against `warren server`: memory must stay flat and no session
# may leak.
#
# N client engines in one process (target/release/examples/storm --churn) from a second
# namespace connect, pass traffic (an echo a second each), renegotiate every 30 s and leave,
# in a loop: each lives 20-90 s, nine in ten leave with explicit-exit-notify, one in ten
# vanishes without a word (the server reaps it by ping-restart, 60 s). Every --sample
# seconds the server's VmRSS, VmHWM, CPU time and open sessions (its status file) are
# recorded. After the load stops, the open sessions must fall to zero within 150 s.
#
# Usage (as root): bench/soak.sh [--time SECONDS] [-n N] [--sample SECONDS] [--warren PATH]
#                                [--storm PATH]
#   defaults: --time 3600, -n 100, --sample 60
# Build first: cargo build --release -p warren-cli --bin warren --example storm
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
N=100
SECS=3600
SAMPLE=60
WARREN="target/release/warren"
STORM="target/release/examples/storm"
while [ $# -gt 0 ]; do
    case "$1" in
        -n) N="$2"; shift 2 ;;
        --time) SECS="$2"; shift 2 ;;
        --sample) SAMPLE="$2"; shift 2 ;;
        --warren) WARREN="$2"; shift 2 ;;
        --storm) STORM="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
bench_require openvpn ip openssl
[ -x "$WARREN" ] && [ -x "$STORM" ] || { echo "build first: cargo build --release -p warren-cli --bin warren --example storm" >&2; exit 1; }
WARREN=$(realpath "$WARREN"); STORM=$(realpath "$STORM")

ID=$$
NS_S="wk${ID}s"; NS_C="wk${ID}c"; IF_S="wk${ID}a"; IF_C="wk${ID}b"
WORK="$(mktemp -d /tmp/warren-soak.XXXXXX)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    netns_del "$NS_C"
    netns_del "$NS_S"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[soak] $*" >&2; }

bench_pki "$WORK"
bench_link "$NS_S" "$NS_C" "$IF_S" "$IF_C"

# One certificate for all clients: duplicate-cn. A /22 pool holds the vanished sessions too.
cat > "$WORK/server.conf" <<CONF
port 1194
proto udp
dev tunsoak
dev-type tun
ca $WORK/ca.crt
cert $WORK/server.crt
key $WORK/server.key
dh none
tls-crypt $WORK/ta.key
topology subnet
server 10.8.0.0 255.255.252.0
keepalive 10 60
duplicate-cn
max-clients 1024
status $WORK/status.txt 5
status-version 2
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

sessions() { grep -c '^CLIENT_LIST,' "$WORK/status.txt" 2>/dev/null || true; }

ip netns exec "$NS_S" "$WARREN" server --config "$WORK/server.conf" > "$WORK/server.log" 2>&1 &
SPID=$!
PIDS+=("$SPID")
for _ in $(seq 100); do
    ip netns exec "$NS_S" ip link show tunsoak >/dev/null 2>&1 && break
    sleep 0.1
done
sleep 0.5
kill -0 "$SPID" || { cat "$WORK/server.log" >&2; exit 1; }
HZ=$(getconf CLK_TCK)
log "warren server pid $SPID; $N churning clients for $SECS s, a sample every $SAMPLE s"

ip netns exec "$NS_C" timeout $((SECS + 60)) "$STORM" --server 198.18.0.1:1194 \
    --profile "$WORK/client.ovpn" -n "$N" --churn "$SECS" > "$WORK/storm.out" 2> "$WORK/storm.err" &
LPID=$!
PIDS+=("$LPID")

printf '%8s %10s %10s %8s %9s\n' "t (s)" "VmRSS KiB" "VmHWM KiB" "CPU s" "sessions" | tee "$WORK/samples"
T0=$(date +%s)
sample() {
    printf '%8s %10s %10s %8s %9s\n' "$(( $(date +%s) - T0 ))" "$(status_kb "$SPID" VmRSS)" \
        "$(status_kb "$SPID" VmHWM)" "$(awk -v t="$(cpu_ticks "$SPID")" -v hz="$HZ" 'BEGIN{printf "%.1f", t/hz}')" \
        "$(sessions)" | tee -a "$WORK/samples"
}
sample
while kill -0 "$LPID" 2>/dev/null; do
    for _ in $(seq "$SAMPLE"); do kill -0 "$LPID" 2>/dev/null || break; sleep 1; done
    kill -0 "$SPID" 2>/dev/null || { log "the server died"; tail -20 "$WORK/server.log" >&2; exit 1; }
    sample
done
wait "$LPID" || log "the load generator exited with $?"
cat "$WORK/storm.out"
sort "$WORK/storm.err" | uniq -c | sort -rn | head -5 >&2

# Drain: every session must go (exit-notify at once, the vanished ones by ping-restart).
LEFT=$(sessions)
for _ in $(seq 150); do
    LEFT=$(sessions)
    [ "${LEFT:-0}" = 0 ] && break
    sleep 1
done
sample
RSS_FIRST=$(awk 'NR > 1 && $1 >= 60 {print $2; exit}' "$WORK/samples")
RSS_LAST=$(awk 'END {print $2}' "$WORK/samples")
printf '\nsoak: %s clients churning for %s s against warren %s\n' "$N" "$SECS" "$("$WARREN" --version 2>/dev/null | head -1)"
printf 'server VmRSS after the first minute %s KiB, at the end %s KiB (%+d KiB)\n' "$RSS_FIRST" "$RSS_LAST" $((RSS_LAST - RSS_FIRST))
printf 'sessions left open 150 s after the load stopped: %s\n' "${LEFT:-?}"
printf 'machine: %s cores, %s, kernel %s\n' "$(nproc)" \
    "$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')" "$(uname -r)"
[ "${LEFT:-1}" = 0 ]
