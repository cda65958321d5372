#!/usr/bin/env bash
# dataplane-bench.sh: the data-plane benchmark of issue 5. In one run, three tunnels, each a
# client namespace <-> server namespace over its own veth pair (198.18.0.0/24 underlay):
#   * openvpn:   `openvpn` client   <-> `openvpn --config server.conf` (UDP, AES-256-GCM, tls-crypt)
#   * warren:    `warren client`    <-> `warren server --config server.conf` (same files)
#   * boringtun: `boringtun-cli`    <-> `boringtun-cli` (userspace WireGuard, set up with `wg`)
# For each: time to first ping; iperf3 client -> server through the tunnel, 1 and 4 TCP
# streams, --runs runs each (interleaved between the tunnels so background load hits them
# alike), reporting the median and min-max Mbit/s, the tunnelled TCP retransmits (iperf3
# `sum_sent.retransmits`, median), CPU seconds of the server and of the client process during
# the run (utime+stime from /proc, median, with the user/system split) and RSS (VmHWM, VmRSS).
# Prints one table with the ratios warren/openvpn and warren/boringtun, the issue's goals, and
# the machine.
#
# Usage (as root; needs openvpn, iperf3, iproute2, iputils-ping, openssl, jq; wg from
# wireguard-tools for the boringtun row):
#   bench/dataplane-bench.sh [--warren PATH] [--boringtun PATH] [--time SECONDS] [--runs N]
#       [--only openvpn,warren,boringtun] [--baseline PATH] [--no-offload] [--soak [SECONDS]] [--perf DIR]
#       [--access-rules N] [--proto udp|tcp]
#   --warren PATH     warren binary (default target/release/warren: cargo build --release -p warren-cli)
#   --boringtun PATH  the boringtun-cli binary, or a cache directory holding bin/boringtun-cli;
#                     if absent it is built there on first use (cargo install boringtun-cli,
#                     several minutes). Default: target/bench-tools. No build, no row.
#   --time SECONDS    length of each iperf3 run (default 10); --runs N runs each (default 3)
#   --baseline PATH   also run a second warren binary (e.g. a build of an older commit) as the
#                     "baseline" column, interleaved with the others: before/after in one run
#   --no-offload      pass --no-offload to both warren ends (one packet per system call)
#   --soak [SECONDS]  then a single-stream run of SECONDS (default 60) through warren with the
#                     server's VmRSS sampled every 5 s: peak, and growth after the first 10 s
#   --perf DIR        then one more single-stream run through warren under `perf record -g`
#                     (cpu-clock) of the server and of the client; data and reports kept in DIR
#   --access-rules N  the warren server checks every packet of the bench client against N
#                     access rules that never match (deny, TCP ports 1-1024 of hosts outside
#                     the tunnel) and a final allow (`warren-access client ...` lines); the
#                     baseline column runs without them
#   --proto udp|tcp   the OpenVPN transport of the openvpn, warren and baseline tunnels (default
#                     udp); with tcp both servers get `proto tcp-server` and both clients
#                     `proto tcp-client` in the same files (OpenVPN over TCP, fact sheet §9), and
#                     the boringtun row (WireGuard is UDP only) is left out
#
# Everything that sends traffic runs in namespaces made here (dp<pid><o|w|b><s|c>); the tun
# devices are made inside them. Every wait is bounded; on exit (also on error or Ctrl-C) the
# processes started here are killed by PID, the namespaces deleted, and boringtun's API
# sockets (/var/run/wireguard/wg<pid><s|c>.sock) removed.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WARREN="$REPO/target/release/warren"
BT_ARG="$REPO/target/bench-tools"
SECS=10
RUNS=3
ONLY="openvpn,warren,boringtun"
NO_OFFLOAD=0
SOAK=0
PERF_DIR=""
BASELINE=""
ACCESS_RULES=0
PROTO=udp
while [ $# -gt 0 ]; do
    case "$1" in
        --warren) WARREN="$2"; shift 2 ;;
        --baseline) BASELINE="$2"; shift 2 ;;
        --boringtun) BT_ARG="$2"; shift 2 ;;
        --time) SECS="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --no-offload) NO_OFFLOAD=1; shift ;;
        --soak)
            SOAK=60; shift
            case "${1:-}" in ''|-*) ;; *) SOAK="$1"; shift ;; esac ;;
        --perf) PERF_DIR="$2"; shift 2 ;;
        --access-rules) ACCESS_RULES="$2"; shift 2 ;;
        --proto) PROTO="$2"; shift 2 ;;
        -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
for v in "$SECS" "$RUNS" "$SOAK" "$ACCESS_RULES"; do
    case "$v" in ''|*[!0-9]*) echo "--time, --runs, --soak and --access-rules take whole numbers" >&2; exit 2 ;; esac
done
[ "$SECS" -ge 2 ] && [ "$RUNS" -ge 1 ] || { echo "--time >= 2 and --runs >= 1" >&2; exit 2; }
[ "$SOAK" = 0 ] || [ "$SOAK" -ge 15 ] || { echo "--soak needs at least 15 s" >&2; exit 2; }
case "$PROTO" in
    udp) SRV_PROTO=udp; CLI_PROTO=udp; LISTEN_SS=-Hlun ;;
    tcp) SRV_PROTO=tcp-server; CLI_PROTO=tcp-client; LISTEN_SS=-Hltn
         # WireGuard has no TCP mode: no boringtun row.
         ONLY=${ONLY//boringtun/} ;;
    *) echo "--proto takes udp or tcp" >&2; exit 2 ;;
esac
bench_require openvpn iperf3 ip ping openssl ss jq awk timeout
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || { echo "--baseline: $BASELINE is not an executable" >&2; exit 2; }
    ONLY="$ONLY,baseline"
fi
KINDS=()
for k in openvpn warren baseline boringtun; do
    case ",$ONLY," in *",$k,"*) KINDS+=("$k") ;; esac
done
[ ${#KINDS[@]} -gt 0 ] || { echo "--only takes openvpn,warren,boringtun" >&2; exit 2; }
want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }

log() { echo "[dataplane] $*" >&2; }
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
git_rev=$(git -C "$REPO" log -1 --format=%h 2>/dev/null || echo unknown)
if git -C "$REPO" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null | grep -q .; then
    git_rev="$git_rev, working tree dirty"
fi
ID=$$
WORK="$(mktemp -d /tmp/warren-dataplane.XXXXXX)"
declare -A PIDS=()     # processes started here and not yet reaped, by PID
NSLIST=()
WG_S="wg${ID}s"
WG_C="wg${ID}c"

cleanup() {
    local p n
    for p in "${!PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${!PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for n in "${NSLIST[@]}"; do
        netns_del "$n"
        if [ -e "/run/netns/$n" ]; then echo "[dataplane] could not delete namespace $n: ip netns del $n" >&2; fi
    done
    rm -f "/var/run/wireguard/$WG_S.sock" "/var/run/wireguard/$WG_C.sock"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

track() { PIDS[$1]=1; }
# Stop a process started here: TERM, up to 5 s, then KILL; reap it and forget its PID.
stop_pid() {
    local p=$1 i
    [ -n "${PIDS[$p]:-}" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "PIDS[$p]"
}

# ---- warren binary and its --no-offload flag ----
WOPT=()
if want warren; then
    if [ ! -x "$WARREN" ]; then
        log "warren binary $WARREN not found (cargo build --release -p warren-cli): no warren row"
        ONLY=${ONLY//warren/}
    else
        # Run a private copy: the release binary may be rebuilt while this runs, and both
        # ends must be the same build (the one described in the report).
        WARREN_SRC=$(realpath "$WARREN")
        WARREN_BUILT=$(date -r "$WARREN_SRC" '+%F %T %Z')
        cp "$WARREN_SRC" "$WORK/warren"
        WARREN="$WORK/warren"
        if [ "$NO_OFFLOAD" = 1 ]; then
            if "$WARREN" server --help 2>&1 | grep -q -- '--no-offload' &&
               "$WARREN" client --help 2>&1 | grep -q -- '--no-offload'; then
                WOPT=(--no-offload)
            else
                echo "this warren binary ($WARREN_SRC) has no --no-offload flag yet" \
                     "(\`warren server --help\` / \`warren client --help\` do not list it)" >&2
                exit 1
            fi
        fi
    fi
fi

# ---- boringtun: find or build it, and wg ----
BT=""
BT_WHY=""
if want boringtun; then
    if ! command -v wg >/dev/null; then
        BT_WHY="wg not found (apt-get install -y --no-install-recommends wireguard-tools)"
    elif [ -f "$BT_ARG" ] && [ -x "$BT_ARG" ]; then
        BT=$(realpath "$BT_ARG")
    else
        mkdir -p "$BT_ARG"
        BT_DIR=$(realpath "$BT_ARG")
        if [ ! -x "$BT_DIR/bin/boringtun-cli" ]; then
            if command -v cargo >/dev/null; then
                log "building boringtun-cli into $BT_DIR (first use; several minutes; log: $BT_DIR/install.log)"
                if ! timeout 3600 cargo install boringtun-cli --locked --root "$BT_DIR" \
                        --target-dir "$BT_DIR/build" >"$BT_DIR/install.log" 2>&1; then
                    BT_WHY="cargo install boringtun-cli failed: $(grep -m1 -E '^error' "$BT_DIR/install.log" || tail -n 1 "$BT_DIR/install.log")"
                fi
            else
                BT_WHY="no boringtun-cli in $BT_DIR/bin and no cargo to build it"
            fi
        fi
        if [ -x "$BT_DIR/bin/boringtun-cli" ]; then BT="$BT_DIR/bin/boringtun-cli"; fi
    fi
    if [ -z "$BT" ]; then
        log "boringtun: ${BT_WHY:-not available}: its row stays empty"
        ONLY=${ONLY//boringtun/}
    fi
fi
KINDS=()
for k in openvpn warren baseline boringtun; do if want "$k"; then KINDS+=("$k"); fi; done
[ ${#KINDS[@]} -gt 0 ] || { echo "nothing to run" >&2; exit 1; }

# ---- PKI (easy-rsa 3.1 style extensions), tls-crypt key, WireGuard keys ----
bench_pki "$WORK"
(
    cd "$WORK"
    if [ -n "$BT" ]; then
        umask 077
        wg genkey > wg-s.key; wg pubkey < wg-s.key > wg-s.pub
        wg genkey > wg-c.key; wg pubkey < wg-c.key > wg-c.pub
    fi
)

cat > "$WORK/server.conf" <<CONF
port 1194
proto $SRV_PROTO
dev tunbench
ca $WORK/ca.crt
cert $WORK/server.crt
key $WORK/server.key
dh none
tls-crypt $WORK/ta.key
topology subnet
server 10.8.0.0 255.255.255.0
keepalive 10 60
verb 3
CONF
# explicit-exit-notify is UDP only (OpenVPN ignores it over TCP, with a notice).
[ "$PROTO" = tcp ] || echo "explicit-exit-notify 1" >> "$WORK/server.conf"
# The warren server's config: the same, plus --access-rules N rules for the client's
# certificate (CN "client") that never match its traffic, and a final allow.
cp "$WORK/server.conf" "$WORK/server-warren.conf"
if [ "$ACCESS_RULES" -gt 0 ]; then
    awk -v n="$ACCESS_RULES" 'BEGIN {
        for (i = 0; i < n; i++)
            printf "warren-access client deny 172.%d.%d.%d:1-1024/tcp\n", 16 + int(i / 65536) % 16, int(i / 256) % 256, i % 256
        print "warren-access client allow 0.0.0.0/0"
    }' >> "$WORK/server-warren.conf"
fi
cat > "$WORK/client.conf" <<CONF
client
dev tunbenchc
proto $CLI_PROTO
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
HZ=$(getconf CLK_TCK)
# "utime stime" of PID in clock ticks (fields 14 and 15; the comm field may hold spaces).
cpu_us() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

declare -A NSS NSC SPID CPID TIP R
letter() { case $1 in openvpn) echo o ;; warren) echo w ;; baseline) echo x ;; boringtun) echo b ;; esac; }
# The warren binary of a kind: the baseline column runs --baseline PATH.
wbin() { if [ "$1" = baseline ]; then echo "$BASELINE"; else echo "$WARREN"; fi; }
# Its server config: the baseline runs without --access-rules (an older build may not know them).
wconf() { if [ "$1" = baseline ]; then echo "$WORK/server.conf"; else echo "$WORK/server-warren.conf"; fi; }

# Namespaces and veth for one tunnel: server side 198.18.0.1, client side 198.18.0.2.
make_ns() {
    local k=$1 l s c a b
    l=$(letter "$k")
    s="dp${ID}${l}s"; c="dp${ID}${l}c"; a="dp${ID}${l}a"; b="dp${ID}${l}b"
    NSS[$k]=$s; NSC[$k]=$c
    NSLIST+=("$s" "$c")
    bench_link "$s" "$c" "$a" "$b"
}

# Wait (bounded, 10 s) until boringtun's API socket for $1 exists.
wait_wg_sock() {
    local i
    for i in $(seq 1 100); do
        [ -S "/var/run/wireguard/$1.sock" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

start_server() {
    local k=$1 ns=${NSS[$1]} pid ok=0 port=1194 i
    case $k in
        openvpn) ip netns exec "$ns" openvpn --config "$WORK/server.conf" >"$WORK/server-$k.log" 2>&1 & ;;
        warren|baseline) ip netns exec "$ns" "$(wbin "$k")" server --config "$(wconf "$k")" "${WOPT[@]}" \
                    >"$WORK/server-$k.log" 2>&1 & ;;
        boringtun) ip netns exec "$ns" env -u WG_SUDO "$BT" --foreground --disable-drop-privileges "$WG_S" \
                       >"$WORK/server-$k.log" 2>&1 & ;;
    esac
    pid=$!
    track "$pid"
    SPID[$k]=$pid
    if [ "$k" = boringtun ]; then
        port=51820
        wait_wg_sock "$WG_S" "$pid" || { log "boringtun server: no API socket"; return 1; }
        ip netns exec "$ns" wg set "$WG_S" listen-port 51820 private-key "$WORK/wg-s.key" \
            peer "$(cat "$WORK/wg-c.pub")" allowed-ips 10.9.0.2/32
        ip -n "$ns" addr add 10.9.0.1/24 dev "$WG_S"
        ip -n "$ns" link set dev "$WG_S" mtu 1420 up
        TIP[$k]=10.9.0.1
    else
        TIP[$k]=10.8.0.1
    fi
    # The OpenVPN port listens on UDP, or on TCP with --proto tcp; boringtun's on UDP.
    local ssopt=$LISTEN_SS
    [ "$k" != boringtun ] || ssopt=-Hlun
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        if ip netns exec "$ns" ss "$ssopt" "sport = :$port" | grep -q .; then ok=1; break; fi
        sleep 0.1
    done
    [ $ok = 1 ] || { log "$k server did not start:"; tail -n 20 "$WORK/server-$k.log" >&2; return 1; }
}

start_client() {
    local k=$1 ns=${NSC[$1]} pid
    case $k in
        openvpn) ip netns exec "$ns" openvpn --config "$WORK/client.conf" >"$WORK/client-$k.log" 2>&1 & ;;
        warren|baseline) ip netns exec "$ns" "$(wbin "$k")" client "${WOPT[@]}" "$WORK/client.conf" >"$WORK/client-$k.log" 2>&1 & ;;
        boringtun) ip netns exec "$ns" env -u WG_SUDO "$BT" --foreground --disable-drop-privileges "$WG_C" \
                       >"$WORK/client-$k.log" 2>&1 & ;;
    esac
    pid=$!
    track "$pid"
    CPID[$k]=$pid
    if [ "$k" = boringtun ]; then
        wait_wg_sock "$WG_C" "$pid" || { log "boringtun client: no API socket"; return 1; }
        ip netns exec "$ns" wg set "$WG_C" private-key "$WORK/wg-c.key" \
            peer "$(cat "$WORK/wg-s.pub")" endpoint 198.18.0.1:51820 allowed-ips 10.9.0.0/24
        ip -n "$ns" addr add 10.9.0.2/24 dev "$WG_C"
        ip -n "$ns" link set dev "$WG_C" mtu 1420 up
    fi
}

# Bring one tunnel up and measure the time from starting the client to the first echo reply.
setup_kind() {
    local k=$1 t0 t1 ok=0 i
    log "== $k: starting"
    make_ns "$k"
    start_server "$k" || return 1
    t0=$(now_ns)
    start_client "$k" || { tail -n 20 "$WORK/client-$k.log" >&2; return 1; }
    # Bounded: 30 s, each attempt waits up to 100 ms for its reply.
    for i in $(seq 1 3000); do
        if ip netns exec "${NSC[$k]}" ping -n -c 1 -W 0.1 "${TIP[$k]}" >/dev/null 2>&1; then ok=1; break; fi
        kill -0 "${CPID[$k]}" 2>/dev/null || break
        [ $(( $(now_ns) - t0 )) -lt 30000000000 ] || break
        sleep 0.02
    done
    t1=$(now_ns)
    if [ $ok != 1 ]; then
        log "$k: no ping through the tunnel within 30 s"; tail -n 20 "$WORK/client-$k.log" >&2
        return 1
    fi
    R[$k,ping]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) / 1e6}')
    log "$k: first ping after ${R[$k,ping]} ms"
}

# Start a one-shot iperf3 server on the tunnel address; its PID in IPID. (Functions that start
# processes run in this shell, never in $(...), so that the PIDS table and the traps see them.)
IPID=""
iperf_server() {
    local k=$1 port=$2 i
    ip netns exec "${NSS[$k]}" iperf3 -s -1 -B "${TIP[$k]}" -p "$port" >"$WORK/iperf-s-$k.log" 2>&1 &
    IPID=$!
    track "$IPID"
    for i in $(seq 1 100); do
        if ip netns exec "${NSS[$k]}" ss -Hltn "sport = :$port" | grep -q .; then break; fi
        sleep 0.1
    done
}

# One iperf3 run client -> server: sets OUT to "Mbit/s retransmits srv_user srv_sys cli_user
# cli_sys" (CPU in seconds).
OUT=""
iperf_once() {
    local k=$1 n=$2 secs=$3 port=5201 ipid s0 s1 c0 c1 rc=0 j mbit retr
    OUT=""
    iperf_server "$k" "$port"
    ipid=$IPID
    s0=$(cpu_us "${SPID[$k]}"); c0=$(cpu_us "${CPID[$k]}")
    timeout $((secs + 30)) ip netns exec "${NSC[$k]}" \
        iperf3 -c "${TIP[$k]}" -p "$port" -t "$secs" -P "$n" -J --connect-timeout 5000 \
        >"$WORK/iperf-$k.json" 2>"$WORK/iperf-$k.err" || rc=$?
    s1=$(cpu_us "${SPID[$k]}"); c1=$(cpu_us "${CPID[$k]}")
    stop_pid "$ipid"
    j="$WORK/iperf-$k.json"
    if [ $rc != 0 ] || ! jq -e '.end.sum_received.bits_per_second' "$j" >/dev/null 2>&1; then
        log "$k: iperf3 -P $n failed (rc $rc): $(jq -r '.error // empty' "$j" 2>/dev/null) $(head -c 300 "$WORK/iperf-$k.err")"
        return 1
    fi
    mbit=$(jq -r '.end.sum_received.bits_per_second / 1e6' "$j")
    retr=$(jq -r '.end.sum_sent.retransmits // "-"' "$j")
    OUT=$(awk -v m="$mbit" -v r="$retr" -v h="$HZ" -v s0="$s0" -v s1="$s1" -v c0="$c0" -v c1="$c1" 'BEGIN {
        split(s0, a, " "); split(s1, b, " "); split(c0, c, " "); split(c1, d, " ");
        printf "%.0f %s %.2f %.2f %.2f %.2f\n", m, r, (b[1] - a[1]) / h, (b[2] - a[2]) / h, (d[1] - c[1]) / h, (d[2] - c[2]) / h }')
}

# Median of the numbers given (mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
        else printf "%g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
minmax() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 {a = $1} {b = $1} END {print a "-" b}'; }

# ---- bring the tunnels up ----
ACTIVE=()
for k in "${KINDS[@]}"; do
    if setup_kind "$k"; then ACTIVE+=("$k"); else log "$k: failed (its column stays empty)"; fi
done

# ---- throughput runs, interleaved between tunnels (order rotated each round) ----
declare -A RUNVALS
if [ ${#ACTIVE[@]} -gt 0 ]; then
    for r in $(seq 1 "$RUNS"); do
        for n in 1 4; do
            for i in $(seq 0 $((${#ACTIVE[@]} - 1))); do
                k=${ACTIVE[$(( (i + r - 1) % ${#ACTIVE[@]} ))]}
                if iperf_once "$k" "$n" "$SECS"; then
                    log "$k: run $r, $n stream(s): $OUT  (Mbit/s retr srv_u srv_s cli_u cli_s)"
                    RUNVALS[$k,$n]+="$OUT;"
                fi
            done
        done
    done
fi

# Summaries per tunnel and stream count.
for k in "${ACTIVE[@]}"; do
    for n in 1 4; do
        v=${RUNVALS[$k,$n]:-}
        [ -n "$v" ] || continue
        IFS=';' read -r -a lines <<< "${v%;}"
        mb=(); rt=(); sc=(); su=(); ss_=(); cc=(); cu=(); cs=(); eff=()
        for l in "${lines[@]}"; do
            read -r m re a b c d <<< "$l"
            mb+=("$m"); rt+=("$re"); su+=("$a"); ss_+=("$b"); cu+=("$c"); cs+=("$d")
            sc+=("$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a + b}')")
            cc+=("$(awk -v a="$c" -v b="$d" 'BEGIN {printf "%.2f", a + b}')")
            eff+=("$(awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" -v m="$m" -v s="$SECS" \
                'BEGIN {if (m > 0) printf "%.2f", (a + b + c + d) / (m * s / 1000); else print 0}')")
        done
        R[$k,mbit$n]=$(median "${mb[@]}")
        R[$k,range$n]=$(minmax "${mb[@]}")
        R[$k,runs$n]=${#mb[@]}
        R[$k,retr$n]=$(median "${rt[@]}")
        R[$k,scpu$n]=$(median "${sc[@]}")
        R[$k,ssplit$n]="$(median "${su[@]}")/$(median "${ss_[@]}")"
        R[$k,ccpu$n]=$(median "${cc[@]}")
        R[$k,csplit$n]="$(median "${cu[@]}")/$(median "${cs[@]}")"
        R[$k,eff$n]=$(median "${eff[@]}")
    done
done

# ---- optional: perf profile of both warren ends during one single-stream run ----
PERF_NOTE=""
if [ -n "$PERF_DIR" ] && printf '%s\n' "${ACTIVE[@]}" | grep -qx warren; then
    mkdir -p "$PERF_DIR"
    PERF_DIR=$(realpath "$PERF_DIR")
    if ! command -v perf >/dev/null; then
        PERF_NOTE="perf not installed (apt-get install -y linux-perf)"
    elif ! perf stat -e cpu-clock true >/dev/null 2>&1; then
        PERF_NOTE="perf stat -e cpu-clock does not work here"
    else
        log "warren: single-stream run under perf record (data in $PERF_DIR)"
        iperf_server warren 5301; ipid=$IPID
        ip netns exec "${NSS[warren]}" timeout $((SECS + 20)) perf record -q -e cpu-clock -F 999 -g \
            -p "${SPID[warren]}" -o "$PERF_DIR/server.data" -- sleep $((SECS - 1)) >"$PERF_DIR/server.record.log" 2>&1 &
        p1=$!; track "$p1"
        ip netns exec "${NSC[warren]}" timeout $((SECS + 20)) perf record -q -e cpu-clock -F 999 -g \
            -p "${CPID[warren]}" -o "$PERF_DIR/client.data" -- sleep $((SECS - 1)) >"$PERF_DIR/client.record.log" 2>&1 &
        p2=$!; track "$p2"
        timeout $((SECS + 30)) ip netns exec "${NSC[warren]}" \
            iperf3 -c "${TIP[warren]}" -p 5301 -t "$SECS" -P 1 -f m --connect-timeout 5000 \
            >"$PERF_DIR/iperf.txt" 2>&1 || true
        for p in "$p1" "$p2"; do
            for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            stop_pid "$p"
        done
        stop_pid "$ipid"
        for side in server client; do
            if [ -s "$PERF_DIR/$side.data" ]; then
                timeout 300 perf report -i "$PERF_DIR/$side.data" --stdio --no-children -g none \
                    --fields overhead,dso,sym --percent-limit 0.5 >"$PERF_DIR/$side.txt" 2>/dev/null || true
            fi
        done
    fi
    [ -z "$PERF_NOTE" ] || log "perf: $PERF_NOTE"
fi

# ---- optional: soak run through warren, server VmRSS every 5 s ----
SOAK_SAMPLES=""
if [ "$SOAK" != 0 ] && printf '%s\n' "${ACTIVE[@]}" | grep -qx warren; then
    log "warren: ${SOAK} s single-stream soak, server VmRSS every 5 s"
    iperf_server warren 5401; ipid=$IPID
    timeout $((SOAK + 30)) ip netns exec "${NSC[warren]}" \
        iperf3 -c "${TIP[warren]}" -p 5401 -t "$SOAK" -P 1 -J --connect-timeout 5000 \
        >"$WORK/soak.json" 2>"$WORK/soak.err" &
    sp=$!; track "$sp"
    for t in $(seq 0 5 "$SOAK"); do
        SOAK_SAMPLES+="$t:$(status_kb "${SPID[warren]}" VmRSS) "
        if [ "$t" -lt "$SOAK" ]; then sleep 5; fi
    done
    for _ in $(seq 1 300); do kill -0 "$sp" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$sp"
    stop_pid "$ipid"
    R[soak,mbit]=$(jq -r '.end.sum_received.bits_per_second / 1e6 | floor' "$WORK/soak.json" 2>/dev/null || echo "-")
    R[soak,retr]=$(jq -r '.end.sum_sent.retransmits' "$WORK/soak.json" 2>/dev/null || echo "-")
    R[soak,hwm]=$(status_kb "${SPID[warren]}" VmHWM)
    # Growth: largest sample from 10 s on, minus the sample at 10 s. "grew" above 1 MiB.
    read -r peak at10 max10 <<< "$(echo "$SOAK_SAMPLES" | tr ' ' '\n' |
        awk -F: 'NF == 2 && $2 != "" {if ($2 > p) p = $2; if ($1 == 10) a = $2; if ($1 >= 10 && $2 > m) m = $2}
                 END {print p + 0, a + 0, m + 0}')"
    R[soak,peak]=$peak; R[soak,at10]=$at10; R[soak,max10]=$max10
    R[soak,growth]=$(( max10 - at10 ))
    if [ $(( max10 - at10 )) -gt 1024 ]; then R[soak,verdict]="grew"; else R[soak,verdict]="no growth"; fi
fi

# ---- memory at the end, offload notes, stop ----
OFFLOAD_LOG=""
for k in "${ACTIVE[@]}"; do
    R[$k,shwm]=$(status_kb "${SPID[$k]}" VmHWM)
    R[$k,srss]=$(status_kb "${SPID[$k]}" VmRSS)
    R[$k,chwm]=$(status_kb "${CPID[$k]}" VmHWM)
    R[$k,crss]=$(status_kb "${CPID[$k]}" VmRSS)
    if [ "$k" = warren ]; then
        OFFLOAD_LOG=$(grep -h -i -E 'offload|GRO|GSO|one packet per|access rules' "$WORK/server-warren.log" "$WORK/client-warren.log" \
            2>/dev/null | sed 's/^/  /' | head -n 6 || true)
    fi
    stop_pid "${CPID[$k]}"
    stop_pid "${SPID[$k]}"
done

# ---- report ----
ratio() {   # ratio KEY OTHER: warren / OTHER
    local a=${R[$2,$1]:-} b=${R[warren,$1]:-}
    if [ -n "$a" ] && [ -n "$b" ] && [ "$a" != - ] && [ "$b" != - ]; then
        awk -v a="$a" -v b="$b" 'BEGIN {if (a > 0) printf "%.2f", b / a; else print "-"}'
    else
        echo "-"
    fi
}
W=40
row() {   # row LABEL KEY [noratio]
    local ro rb rx
    if [ "${3:-}" = noratio ]; then ro=""; rb=""; rx=""; else
        ro=$(ratio "$2" openvpn); rb=$(ratio "$2" boringtun); rx=$(ratio "$2" baseline); fi
    if [ -n "$BASELINE" ]; then
        printf "%-${W}s %12s %12s %12s %12s %10s %10s %10s\n" "$1" "${R[openvpn,$2]:--}" "${R[warren,$2]:--}" \
            "${R[baseline,$2]:--}" "${R[boringtun,$2]:--}" "$ro" "$rb" "$rx"
    else
        printf "%-${W}s %12s %12s %12s %10s %10s\n" "$1" "${R[openvpn,$2]:--}" "${R[warren,$2]:--}" \
            "${R[boringtun,$2]:--}" "$ro" "$rb"
    fi
}

echo
echo "data-plane bench ($PROTO transport): iperf3 client -> server through the tunnel, ${SECS} s per run, ${RUNS} runs per cell (median, min-max)"
echo "machine: $(nproc) CPUs ($(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')), kernel $(uname -r), load average at start $LOAD0"
echo "openvpn: $(openvpn --version | head -n 1 | cut -d' ' -f1-2); boringtun: $( [ -n "$BT" ] && "$BT" --version || echo "n/a (${BT_WHY:-not run})"); $(iperf3 --version | head -n 1 | cut -d' ' -f1-2)"
if want warren; then
    echo "warren: ${WARREN_SRC:-$WARREN} (modified $WARREN_BUILT; repo at $git_rev), offloads $( [ ${#WOPT[@]} -gt 0 ] && echo "off (--no-offload)" || echo "on (default)"), access rules on the client: $( [ "$ACCESS_RULES" -gt 0 ] && echo "$ACCESS_RULES + 1 (--access-rules)" || echo none)"
fi
if [ -n "$BASELINE" ]; then
    echo "baseline: $BASELINE (modified $(date -r "$BASELINE" '+%Y-%m-%d %H:%M'))"
    printf "\n%-${W}s %12s %12s %12s %12s %10s %10s %10s\n" "metric" "openvpn" "warren" "baseline" "boringtun" \
        "w/openvpn" "w/boringtun" "w/baseline"
else
    printf "\n%-${W}s %12s %12s %12s %10s %10s\n" "metric" "openvpn" "warren" "boringtun" "w/openvpn" "w/boringtun"
fi
row "time to first ping (ms)" ping
for n in 1 4; do
    s="$n stream"; [ $n = 1 ] || s="$n streams"
    row "$s: Mbit/s (median)" mbit$n
    row "$s: Mbit/s min-max" range$n noratio
    row "$s: TCP retransmits (median)" retr$n
    row "$s: server CPU s (user+sys)" scpu$n
    row "$s: server CPU s user/sys" ssplit$n noratio
    row "$s: client CPU s (user+sys)" ccpu$n
    row "$s: client CPU s user/sys" csplit$n noratio
    row "$s: CPU s per Gbit, both ends" eff$n
done
row "server peak RSS VmHWM (KiB)" shwm
row "server RSS at end VmRSS (KiB)" srss
row "client peak RSS VmHWM (KiB)" chwm
row "client RSS at end VmRSS (KiB)" crss
if [ -n "$SOAK_SAMPLES" ]; then
    echo
    echo "warren soak, ${SOAK} s single stream: ${R[soak,mbit]} Mbit/s, ${R[soak,retr]} retransmits;" \
         "server VmRSS peak ${R[soak,peak]} KiB (VmHWM ${R[soak,hwm]} KiB), at 10 s ${R[soak,at10]} KiB," \
         "max after 10 s ${R[soak,max10]} KiB: ${R[soak,verdict]} (${R[soak,growth]} KiB; limit 1 MiB)"
    echo "  samples (s:KiB): $SOAK_SAMPLES"
fi

goal() {   # goal TEXT KEY OTHER FACTOR(min, or "lower"/"notworse")
    local r; r=$(ratio "$2" "$3")
    [ "$r" != - ] || { printf '  %-48s %s\n' "$1" "n/a"; return; }
    case $4 in
        lower) awk -v r="$r" -v t="$1" 'BEGIN {printf "  %-48s %s (ratio %s)\n", t, (r < 1 ? "met" : "NOT met"), r}' ;;
        notworse) awk -v r="$r" -v t="$1" 'BEGIN {printf "  %-48s %s (ratio %s)\n", t, (r <= 1 ? "met" : "NOT met"), r}' ;;
        *) awk -v r="$r" -v f="$4" -v t="$1" 'BEGIN {printf "  %-48s %s (%.2f×)\n", t, (r >= f ? "met" : "NOT met"), r}' ;;
    esac
}
if printf '%s\n' "${ACTIVE[@]}" | grep -qx warren; then
    echo
    echo "issue 5 goals:"
    goal "1 stream >= 5x openvpn" mbit1 openvpn 5
    goal "1 stream >= 5x boringtun" mbit1 boringtun 5
    goal "4 streams >= 5x openvpn" mbit4 openvpn 5
    goal "fewer TCP retransmits than openvpn (1 stream)" retr1 openvpn lower
    goal "fewer TCP retransmits than openvpn (4 streams)" retr4 openvpn lower
    goal "time to first ping no worse than openvpn" ping openvpn notworse
    if [ -n "$SOAK_SAMPLES" ]; then
        printf '  %-48s %s\n' "server RSS under load <= 64 MiB" \
            "$( [ "${R[soak,peak]}" -le 65536 ] && echo met || echo "NOT met") (${R[soak,peak]} KiB)"
        printf '  %-48s %s\n' "no server RSS growth over ${SOAK} s" \
            "$( [ "${R[soak,verdict]}" = "no growth" ] && echo met || echo "NOT met") (${R[soak,growth]} KiB after 10 s)"
    else
        printf '  %-48s %s\n' "server RSS under load <= 64 MiB" \
            "$( [ "${R[warren,shwm]:-999999}" -le 65536 ] && echo met || echo "NOT met") (VmHWM ${R[warren,shwm]:-?} KiB; growth: run --soak)"
    fi
fi
if [ -n "$OFFLOAD_LOG" ]; then
    echo
    echo "warren log lines about offloads (and access rules):"
    echo "$OFFLOAD_LOG"
fi
if [ -n "$PERF_DIR" ]; then
    echo
    if [ -n "$PERF_NOTE" ]; then
        echo "perf: $PERF_NOTE (see the user/sys CPU split above)"
    else
        echo "perf (cpu-clock, one ${SECS} s single-stream run through warren: $(awk '/receiver/ {for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") v = $(i - 1)} END {print v}' "$PERF_DIR/iperf.txt") Mbit/s); top symbols by self time:"
        for side in server client; do
            echo "  warren $side:"
            grep -v '^#' "$PERF_DIR/$side.txt" 2>/dev/null | grep -v '^$' | head -n 15 | sed 's/^/    /' || true
        done
        echo "  (full reports: $PERF_DIR/server.txt, $PERF_DIR/client.txt; perf report -i $PERF_DIR/server.data)"
    fi
fi
