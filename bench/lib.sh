# bench/lib.sh: what the benchmark scripts share. Source it; it defines functions only.
#
#   bench_pki DIR       CA, server and client certificates (RSA 2048, easy-rsa 3.1 style
#                       extensions, CN "server" and "client") and a tls-crypt key ta.key in DIR
#   bench_link S C A B  namespaces S (server) and C (client) with lo up, joined by the veth
#                       pair A (in S, 198.18.0.1/24) and B (in C, 198.18.0.2/24)
#   netns_del NAME      delete a namespace, retried (bounded) while its name is still busy
#   status_kb PID FIELD a /proc/PID/status field in KiB (VmRSS, VmHWM)
#   cpu_ticks PID       utime+stime of PID in clock ticks
#   bench_require T...  exit unless running as root and every command T is installed

bench_pki() {
    local dir=$1 n
    cat > "$dir/ext.cnf" <<'EXT'
[req]
distinguished_name = dn
[dn]
[v3ca]
basicConstraints = critical,CA:TRUE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always,issuer:always
keyUsage = cRLSign, keyCertSign
[server]
basicConstraints = CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer:always
extendedKeyUsage = serverAuth
keyUsage = digitalSignature,keyEncipherment
[client]
basicConstraints = CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer:always
extendedKeyUsage = clientAuth
keyUsage = digitalSignature
EXT
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
            -subj "/CN=bench CA" -config ext.cnf -extensions v3ca 2>/dev/null
        for n in server client; do
            openssl req -new -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj "/CN=$n" \
                -config ext.cnf 2>/dev/null
            openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key \
                -set_serial "0x$(openssl rand -hex 8)" -out $n.crt -days 30 \
                -extfile ext.cnf -extensions $n 2>/dev/null
        done
        openvpn --genkey secret ta.key
    )
}

bench_link() {
    local s=$1 c=$2 a=$3 b=$4
    ip netns add "$s"
    ip netns add "$c"
    ip -n "$s" link set lo up
    ip -n "$c" link set lo up
    ip link add "$a" netns "$s" type veth peer name "$b" netns "$c"
    ip -n "$s" addr add 198.18.0.1/24 dev "$a"
    ip -n "$c" addr add 198.18.0.2/24 dev "$b"
    ip -n "$s" link set "$a" up
    ip -n "$c" link set "$b" up
}

netns_del() {
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        ip netns del "$1" 2>/dev/null || true
        [ -e "/run/netns/$1" ] || return 0
        sleep 0.3
    done
}

status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null; }

cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }

bench_require() {
    local t
    [ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, tun)" >&2; exit 1; }
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }
    done
}
