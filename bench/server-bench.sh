#!/usr/bin/env bash
# server-bench.sh: in one run, with the same server.conf and client profile:
#   * openvpn: stock `openvpn` client  ->  `openvpn --config server.conf`
#   * warren:  stock `openvpn` client  ->  `warren server --config server.conf`
#   * pair:    `warren client`         ->  `warren server --config server.conf`
# (the openvpn row is both the server baseline and the openvpn-client/openvpn-server pair).
#
# Measures, for each server:
#   * time to first ping: from starting the client to the first echo reply over the tunnel;
#   * iperf3 throughput client -> server, one stream and four streams;
#   * server CPU time (utime+stime from /proc/PID/stat) during each iperf3 run, as CPU
#     seconds per Gbit carried;
#   * server memory: VmHWM (peak RSS) and VmRSS from /proc/PID/status at the end, and the
#     client's (VmHWM) too.
# and prints a table with ratios to the openvpn row.
#
# Usage (as root; needs openvpn, iperf3, iproute2, iputils-ping, openssl):
#   bench/server-bench.sh [--warren PATH] [--time SECONDS] [--only openvpn|warren|pair]
# PATH defaults to target/release/warren (cargo build --release -p warren-cli).
#
# Everything runs in two network namespaces made here (wb<pid>s = server, wb<pid>c =
# client) joined by a veth pair on 198.18.0.0/24; tun devices are made by the servers and
# the client inside them. Every wait is bounded, and on exit (also on error or Ctrl-C) the
# processes started here are killed by PID and the namespaces deleted.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

WARREN="target/release/warren"
SECS=10
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --warren) WARREN="$2"; shift 2 ;;
        --time) SECS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$SECS" in ''|*[!0-9]*) echo "--time needs whole seconds" >&2; exit 2 ;; esac
bench_require openvpn iperf3 ip ping openssl ss

ID=$$
NS_S="wb${ID}s"
NS_C="wb${ID}c"
IF_S="wb${ID}a"
IF_C="wb${ID}b"
WORK="$(mktemp -d /tmp/warren-bench.XXXXXX)"
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    ip netns del "$NS_C" 2>/dev/null || true
    ip netns del "$NS_S" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[bench] $*" >&2; }
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- PKI (easy-rsa 3.1 style extensions) and tls-crypt key ----
bench_pki "$WORK"

# ---- namespaces ----
bench_link "$NS_S" "$NS_C" "$IF_S" "$IF_C"

cat > "$WORK/server.conf" <<CONF
port 1194
proto udp
dev tunbench
ca $WORK/ca.crt
cert $WORK/server.crt
key $WORK/server.key
dh none
tls-crypt $WORK/ta.key
topology subnet
server 10.8.0.0 255.255.255.0
keepalive 10 60
explicit-exit-notify 1
verb 3
CONF
cat > "$WORK/client.conf" <<CONF
client
dev tunbenchc
proto udp
remote 198.18.0.1 1194
nobind
ca $WORK/ca.crt
cert $WORK/client.crt
key $WORK/client.key
remote-cert-tls server
tls-crypt $WORK/ta.key
verb 3
CONF

now_ns() { date +%s%N; }
clk_tck() { getconf CLK_TCK; }
# utime+stime of PID in clock ticks (fields 14 and 15; the comm field may hold spaces).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# iperf3 from the client namespace; prints "<Mbit/s> <server CPU seconds>".
run_iperf() {
    local spid=$1 streams=$2 port=$3 ipid out mbit t0 t1
    ip netns exec "$NS_S" iperf3 -s -1 -B 10.8.0.1 -p "$port" >"$WORK/iperf-s-$port.log" 2>&1 &
    ipid=$!
    PIDS+=("$ipid")
    for _ in $(seq 1 100); do
        ip netns exec "$NS_S" ss -Hltn "sport = :$port" | grep -q . && break
        sleep 0.1
    done
    t0=$(cpu_ticks "$spid")
    out=$(timeout $((SECS + 30)) ip netns exec "$NS_C" \
        iperf3 -c 10.8.0.1 -p "$port" -t "$SECS" -P "$streams" -f m --connect-timeout 5000 2>&1) || {
        echo "$out" >&2
        kill -KILL "$ipid" 2>/dev/null || true
        return 1
    }
    t1=$(cpu_ticks "$spid")
    wait "$ipid" 2>/dev/null || true
    mbit=$(echo "$out" | awk '/receiver/ {for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") v = $(i - 1)} END {print v}')
    [ -n "$mbit" ] || { echo "$out" >&2; return 1; }
    echo "$mbit $(awk -v a="$t0" -v b="$t1" -v h="$(clk_tck)" 'BEGIN {printf "%.2f", (b - a) / h}')"
}

declare -A R

bench_one() {
    local kind=$1 spid cpid t0 t1 ok=0 r1 r4
    log "== $kind"
    if [ "$kind" != openvpn ] && [ ! -x "$WARREN" ]; then
        log "warren binary $WARREN not found (cargo build --release -p warren-cli)"
        return 1
    fi
    if [ "$kind" = openvpn ]; then
        ip netns exec "$NS_S" openvpn --config "$WORK/server.conf" >"$WORK/server-$kind.log" 2>&1 &
    else
        if [ ! -x "$WARREN" ]; then
            log "warren binary $WARREN not found (cargo build --release -p warren-cli)"
            return 1
        fi
        ip netns exec "$NS_S" "$WARREN" server --config "$WORK/server.conf" >"$WORK/server-$kind.log" 2>&1 &
    fi
    spid=$!
    PIDS+=("$spid")
    for _ in $(seq 1 150); do
        kill -0 "$spid" 2>/dev/null || break
        if ip netns exec "$NS_S" ss -Hlun "sport = :1194" | grep -q .; then ok=1; break; fi
        sleep 0.1
    done
    if [ $ok != 1 ]; then
        log "$kind server did not start:"; tail -n 20 "$WORK/server-$kind.log" >&2
        kill -KILL "$spid" 2>/dev/null || true
        return 1
    fi

    t0=$(now_ns)
    if [ "$kind" = pair ]; then
        ip netns exec "$NS_C" "$WARREN" client "$WORK/client.conf" >"$WORK/client-$kind.log" 2>&1 &
    else
        ip netns exec "$NS_C" openvpn --config "$WORK/client.conf" >"$WORK/client-$kind.log" 2>&1 &
    fi
    cpid=$!
    PIDS+=("$cpid")
    ok=0
    # Bounded: 30 s, at most 3000 attempts (each waits up to 100 ms for its reply).
    for _ in $(seq 1 3000); do
        if ip netns exec "$NS_C" ping -n -c 1 -W 0.1 10.8.0.1 >/dev/null 2>&1; then ok=1; break; fi
        kill -0 "$cpid" 2>/dev/null || break
        [ $(( $(now_ns) - t0 )) -lt 30000000000 ] || break
        sleep 0.02
    done
    t1=$(now_ns)
    if [ $ok != 1 ]; then
        log "$kind: no ping through the tunnel within 30 s"; tail -n 20 "$WORK/client-$kind.log" >&2
        kill -KILL "$cpid" "$spid" 2>/dev/null || true
        return 1
    fi
    R[$kind,ping]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) / 1e6}')
    log "$kind: first ping after ${R[$kind,ping]} ms"

    if r1=$(run_iperf "$spid" 1 5201); then
        R[$kind,mbit1]=${r1% *}
        R[$kind,cpu1]=$(awk -v c="${r1#* }" -v m="${r1% *}" -v s="$SECS" 'BEGIN {printf "%.2f", c / (m * s / 1000)}')
        log "$kind: 1 stream ${R[$kind,mbit1]} Mbit/s, ${R[$kind,cpu1]} CPU s/Gbit"
    fi
    if r4=$(run_iperf "$spid" 4 5202); then
        R[$kind,mbit4]=${r4% *}
        R[$kind,cpu4]=$(awk -v c="${r4#* }" -v m="${r4% *}" -v s="$SECS" 'BEGIN {printf "%.2f", c / (m * s / 1000)}')
        log "$kind: 4 streams ${R[$kind,mbit4]} Mbit/s, ${R[$kind,cpu4]} CPU s/Gbit"
    fi
    R[$kind,hwm]=$(status_kb "$spid" VmHWM)
    R[$kind,rss]=$(status_kb "$spid" VmRSS)
    R[$kind,chwm]=$(status_kb "$cpid" VmHWM)

    kill -TERM "$cpid" 2>/dev/null || true
    kill -TERM "$spid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$cpid" 2>/dev/null || kill -0 "$spid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$cpid" "$spid" 2>/dev/null || true
    wait "$cpid" "$spid" 2>/dev/null || true
    # Let the tun devices disappear before the next server starts.
    sleep 1
}

for kind in openvpn warren pair; do
    if [ -n "$ONLY" ] && [ "$ONLY" != "$kind" ]; then continue; fi
    bench_one "$kind" || log "$kind: failed (its column stays empty)"
done

ratio() {
    local a=${R[openvpn,$1]:-} b=${R[$2,$1]:-}
    if [ -n "$a" ] && [ -n "$b" ]; then
        awk -v a="$a" -v b="$b" 'BEGIN {if (a > 0) printf "%.2f", b / a; else print "-"}'
    else
        echo "-"
    fi
}

echo
echo "bench: ${SECS}s per iperf3 run, $(nproc) CPUs, $(uname -r), $(openvpn --version | head -n 1 | cut -d' ' -f1-2), load average at start: $LOAD0"
echo "openvpn = openvpn client -> openvpn server; warren = openvpn client -> warren server; pair = warren client -> warren server"
printf '%-32s %9s %9s %9s %10s %10s\n' "metric" "openvpn" "warren" "pair" "warren/ovpn" "pair/ovpn"
row() {
    printf '%-32s %9s %9s %9s %10s %10s\n' "$1" "${R[openvpn,$2]:--}" "${R[warren,$2]:--}" "${R[pair,$2]:--}" \
        "$(ratio "$2" warren)" "$(ratio "$2" pair)"
}
row "time to first ping (ms)" ping
row "iperf3 1 stream (Mbit/s)" mbit1
row "iperf3 4 streams (Mbit/s)" mbit4
row "server CPU, 1 stream (s/Gbit)" cpu1
row "server CPU, 4 streams (s/Gbit)" cpu4
row "server peak RSS VmHWM (KiB)" hwm
row "server RSS at end VmRSS (KiB)" rss
row "client peak RSS VmHWM (KiB)" chwm
