#!/usr/bin/env bash
# Passerelle against Postfix 3.7 and against the bare sink, side by side (issue #8).
#
# Not part of CI: it installs Debian's postfix and clamav-daemon when missing (as root), keeps
# both cores busy for a quarter of an hour, and its figures belong to the machine it ran on.
#
#   bench/compare.sh                          # ECDSA and RSA certificate sets, default loads
#   KEYS=ecdsa N=2000 ROUNDS=1 bench/compare.sh   # a quicker look
#   SERVERS=passerelle STORE=postgres KEYS=ecdsa IDLE=0 bench/compare.sh   # one knob
#
# Every server listens on loopback and lives in a scratch directory under /tmp. Postfix runs as
# its own instance (`postfix -c DIR`, with its own main.cf, master.cf, queue and data
# directories): /etc/postfix is neither read nor written, and Debian's postfix service is never
# started. An EXIT trap stops everything the script started. bench/README.md explains the
# figures.
set -euo pipefail

N=${N:-5000}                  # messages per throughput run, at C connections
C=${C:-50}
N_LAT=${N_LAT:-2000}          # messages per latency run, at C_LAT connections
C_LAT=${C_LAT:-10}
SIZE=${SIZE:-10240}           # octets per message
SHAPE=${SHAPE:-text}          # what a message looks like: text (one plain part), alternative
                              # (text and its HTML version) or attachment (a note and a PDF)
ROUNDS=${ROUNDS:-2}           # alternations: postfix, passerelle, sink, postfix, …
KEYS=${KEYS:-"ecdsa rsa"}     # certificate sets; every server uses the set's certificate
SERVERS=${SERVERS:-"postfix passerelle sink"}  # which servers to measure, in this order; add
                              # amavis for Postfix with amavisd-new scanning through the same
                              # clamd (Postfix+Amavis, the classic filtering relay)
AMAVIS_SERVERS=${AMAVIS_SERVERS:-4}  # amavisd's children ($max_servers; its default is 2)
                              # and Postfix's concurrency toward it: 4 delivered the most here
                              # (2: 18, 4: 28-30, 8: 25 msg/s)
K=${K:-1}                     # messages per client connection
PIPELINING=${PIPELINING:-1}   # 1: the load generator pipelines MAIL, RCPT and DATA (RFC 2920)
                              # as Postfix's and Exim's SMTP clients do; 0: one command per
                              # round trip
STORE=${STORE:-sqlite}        # Passerelle's store: sqlite (a file under the scratch
                              # directory), postgres (a throwaway server from
                              # scripts/postgres.sh), or tmpfs (SQLite in /dev/shm: a
                              # diagnostic that removes the fsync's cost; not durable)
IDLE=${IDLE:-5000}            # idle TLS sessions held on Passerelle and on the sink (0: skip)
IDLE_POSTFIX=${IDLE_POSTFIX:-500}  # on Postfix: one smtpd process per session
POSTFIX_TLS_REUSE=${POSTFIX_TLS_REUSE:-0}  # 1: Postfix reuses its TLS connections to the sink
                              # (smtp_tls_connection_reuse, off in Postfix's defaults)
PER_DESTINATION=${PER_DESTINATION:-20}  # Passerelle queue.per_destination (Postfix's default
                              # destination concurrency is 20)
STORE_CONNECTIONS=${STORE_CONNECTIONS:-10}  # Passerelle store.max_connections (its default: 10)
BUILD=${BUILD:-1}             # 0: use the binaries already built
KEEP=${KEEP:-0}               # 1: keep the scratch directory (logs, configs, queues)
PERF=${PERF:-0}               # 1: profile Passerelle (perf record) in each set's first
                              # throughput run and print where its CPU time goes
PERF_LOAD=${PERF_LOAD:-tput}  # which run PERF=1 profiles: tput (at C) or lat (at C_LAT)
CLAMD_VIA=${CLAMD_VIA:-unix}  # how Passerelle reaches clamd: unix (its socket; the message is
                              # passed as a descriptor, FILDES) or tcp (INSTREAM streams)
CLAMD_TMP=${CLAMD_TMP:-tmpfs} # clamd's TemporaryDirectory, where it writes every stream it
                              # scans: tmpfs (/dev/shm, as deploy/README.md advises) or disk

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
PASSERELLE=${PASSERELLE:-$REPO/target/release/passerelle}
LOADGEN=$BENCH_DIR/target/release/passerelle-bench
TICK=$(getconf CLK_TCK)
PIPELINED=()
[ "$PIPELINING" = 1 ] && PIPELINED=(--pipelining)

log() { echo "compare: $*" >&2; }

# True when SERVER is one of the servers measured.
measuring() { [[ " $SERVERS " == *" $1 "* ]]; }

if [ "$(id -u)" -ne 0 ]; then
    log "run as root: Postfix's master needs it (and installing packages)"
    exit 1
fi

# --- what we start, and stopping it -------------------------------------------------------------

WORK=$(mktemp -d /tmp/passerelle-compare.XXXXXX)
chmod 755 "$WORK" # Postfix's daemons run as the postfix user and must reach their queue
SINK_PID= PASSERELLE_PID= IDLE_PID= PF_CONF= SHM= CLAMD_SHM= AMAVIS_PID= AMAVIS_TMP=

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_postfix() {
    [ -n "$PF_CONF" ] || return 0
    local master
    master=$(postfix_master)
    postfix -c "$PF_CONF" stop >/dev/null 2>&1 || true
    if [ -n "$master" ]; then
        for _ in $(seq 1 50); do
            kill -0 "$master" 2>/dev/null || break
            sleep 0.1
        done
        postfix -c "$PF_CONF" abort >/dev/null 2>&1 || true
    fi
    PF_CONF=
}

stop_servers() {
    stop_pid "$IDLE_PID"
    IDLE_PID=
    stop_pid "$PASSERELLE_PID"
    PASSERELLE_PID=
    stop_postfix
    stop_pid "$AMAVIS_PID"
    AMAVIS_PID=
    stop_pid "$SINK_PID"
    SINK_PID=
}

cleanup() {
    stop_servers
    clamd_stop
    pg_stop
    [ -z "$SHM" ] || rm -rf "$SHM"
    [ -z "$CLAMD_SHM" ] || rm -rf "$CLAMD_SHM"
    [ -z "$AMAVIS_TMP" ] || rm -rf "$AMAVIS_TMP"
    if [ "$KEEP" = 1 ]; then
        log "scratch directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}

. "$REPO/scripts/clamd.sh"
. "$REPO/scripts/postgres.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" # 5,000 idle sessions: descriptors for every server we start

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until host:port answers with a 220 greeting.
wait_smtp() {
    local port=$1 what=$2
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port" && IFS= read -r -t 2 line <&3 && [[ $line == 220* ]]) 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "$what did not greet on port $port"
    return 1
}

# --- CPU and memory from /proc ------------------------------------------------------------------

# utime+stime+cutime+cstime of one process, in clock ticks (0 when it is gone).
proc_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13} + ${14} + ${15}))
}

# Processes and their children (Postfix's master and the daemons it runs, amavisd's children).
family() {
    local pid
    for pid in "$@"; do
        echo "$pid"
        pgrep -P "$pid" || true
    done
}

# CPU ticks of a process family. Children that exited were reaped by their parent: their time
# is in the parent's cutime/cstime, so the sum only grows.
family_ticks() {
    local total=0 pid
    # shellcheck disable=SC2086
    for pid in $(family $1); do
        total=$((total + $(proc_ticks "$pid")))
    done
    echo "$total"
}

# Sum of PSS over a process family, in KiB.
family_pss() {
    local total=0 pid kb
    # shellcheck disable=SC2086
    for pid in $(family $1); do
        kb=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# Samples a family's PSS every half second into FILE, keeping the largest sum.
sample_pss() {
    local pid=$1 file=$2 max=0 now
    while :; do
        now=$(family_pss "$pid")
        if [ "$now" -gt "$max" ]; then
            max=$now
            echo "$max" >"$file"
        fi
        sleep 0.5
    done
}

# One counter of the sink's stats line (messages, connections, …).
sink_field() {
    local line
    line=$( (exec 3<>"/dev/tcp/127.0.0.1/$SINK_STATS" && cat <&3) 2>/dev/null)
    sed -E "s/.*$1=([0-9]+).*/\1/" <<<"$line"
}

hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

postfix_master() {
    [ -n "$PF_CONF" ] || return 0
    local pidfile=$WORK/postfix/queue/pid/master.pid
    [ -r "$pidfile" ] && tr -d ' \n' <"$pidfile" || true
}

# The PostgreSQL server Passerelle's store runs on, when this script started it.
postmaster() {
    [ "$STORE" = postgres ] && [ -n "${PG_DIR:-}" ] && head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true
}

# The process families measured for each server (a space-separated list of parents).
server_pid() {
    case $1 in
    postfix) postfix_master ;;
    amavis) echo "$(postfix_master) $AMAVIS_PID" ;;
    passerelle) echo "$PASSERELLE_PID" ;;
    sink) echo "$SINK_PID" ;;
    esac
}

server_port() {
    case $1 in
    postfix) echo "$PF_PORT" ;;
    amavis) echo "$PFA_PORT" ;;
    passerelle) echo "$PS_PORT" ;;
    sink) echo "$SINK_PORT" ;;
    esac
}

# --- setting things up ---------------------------------------------------------------------------

# Installs Debian packages without letting their services start (policy-rc.d answers 101).
apt_install() {
    local policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy=1
    fi
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
}

ensure_postfix() {
    if [ -x /usr/sbin/postfix ]; then
        return 0
    fi
    log "installing postfix from Debian's packages (no configuration, service not started)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt_install postfix
    if command -v systemctl >/dev/null && systemctl is-active --quiet postfix 2>/dev/null; then
        systemctl stop postfix
    fi
}

ensure_amavis() {
    if ! measuring amavis || [ -x /usr/sbin/amavisd ]; then
        return 0
    fi
    log "installing amavisd-new from Debian's packages (service not started)"
    apt_install amavisd-new
}

build() {
    if [ "$BUILD" = 1 ]; then
        log "building passerelle and passerelle-bench (release)"
        (cd "$REPO" && cargo build --release --quiet)
        (cd "$BENCH_DIR" && cargo build --release --quiet)
    fi
    [ -x "$PASSERELLE" ] || { log "no $PASSERELLE"; exit 1; }
    [ -x "$LOADGEN" ] || { log "no $LOADGEN"; exit 1; }
}

# certificate set KEY → $WORK/certs/KEY/{cert,key}.pem
make_certs() {
    local key=$1 dir=$WORK/certs/$1
    mkdir -p "$dir"
    local newkey
    case $key in
    ecdsa) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) log "unknown key type $key"; exit 1 ;;
    esac
    openssl req -x509 "${newkey[@]}" -nodes -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
    chmod 644 "$dir/key.pem" "$dir/cert.pem"
}

start_sink() {
    local dir=$WORK/certs/$1
    "$LOADGEN" sink --listen "127.0.0.1:$SINK_PORT" --stats "127.0.0.1:$SINK_STATS" \
        --cert "$dir/cert.pem" --key "$dir/key.pem" >"$WORK/sink.log" 2>&1 &
    SINK_PID=$!
    wait_smtp "$SINK_PORT" sink
}

# Postfix as a pure relay: mail for example.test from anyone, mandatory STARTTLS in and out,
# relayed to the sink; Debian's defaults otherwise (durable queue, TLS session caches).
start_postfix() {
    local dir=$WORK/certs/$1 pf=$WORK/postfix
    rm -rf "$pf"
    mkdir -p "$pf/conf" "$pf/queue" "$pf/data"
    chown postfix "$pf/data"
    cat >"$pf/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# The load comes from 127.0.0.1 as an internet client would: not a trusted network.
mynetworks = 127.0.0.2/32
relay_domains = example.test
transport_maps = inline:{ example.test=smtp:[127.0.0.1]:$SINK_PORT }
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
readme_directory = no
smtpd_banner = \$myhostname ESMTP
# Like Passerelle's session.max_connections_per_ip: not the limit being measured.
smtpd_client_connection_count_limit = 0
smtpd_tls_chain_files = $dir/key.pem, $dir/cert.pem
smtpd_tls_security_level = encrypt
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_session_cache_database = btree:\${data_directory}/smtpd_scache
smtp_tls_security_level = encrypt
smtp_tls_session_cache_database = btree:\${data_directory}/smtp_scache
# Off by default: Postfix caches no TLS connection to a next hop unless told to (through tlsproxy).
smtp_tls_connection_reuse = $([ "$POSTFIX_TLS_REUSE" = 1 ] && echo yes || echo no)
EOF
    # Debian's master.cf without chroot (a chroot needs copies of /etc files in the queue);
    # the smtpd process limit leaves room for the idle sessions.
    cat >"$pf/conf/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - $((IDLE_POSTFIX + 60)) smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsproxy  unix  -       -       n       -       0       tlsproxy
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    if measuring amavis; then postfix_amavis_services >>"$pf/conf/master.cf"; fi
    PF_CONF=$pf/conf
    postfix -c "$PF_CONF" check >"$pf/check.log" 2>&1 || { cat "$pf/check.log" >&2; exit 1; }
    postfix -c "$PF_CONF" start >"$pf/start.log" 2>&1 || { cat "$pf/start.log" >&2; exit 1; }
    wait_smtp "$PF_PORT" postfix
}

# amavisd-new as Postfix's content filter (its README.postfix setup): mail from Postfix's second
# public listener goes to amavisd over SMTP, amavisd has clamd scan the message and its MIME
# parts (CONTSCAN of its temporary directory) and hands the mail back to a third Postfix
# listener, which relays it to the sink. No SpamAssassin, no DKIM: the virus work only, the
# cheapest Amavis there is. Its temporary directory is on tmpfs, like clamd's.
start_amavis() {
    local am=$WORK/amavis
    rm -rf "$am"
    mkdir -p "$am/conf" "$am/home/var" "$am/home/db"
    [ -n "$AMAVIS_TMP" ] || AMAVIS_TMP=$(mktemp -d /dev/shm/passerelle-amavis.XXXXXX)
    cat >"$am/conf/amavisd.conf" <<EOF
use strict;
# As Debian's 01-debian: amavisd finds file(1) and the decoders on it.
\$ENV{PATH} = \$path = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/usr/bin:/bin';
\$MYHOME = '$am/home';
\$TEMPBASE = '$AMAVIS_TMP';
\$db_home = '$am/home/db';
\$helpers_home = '$am/home/var';
\$lock_file = '$am/home/var/amavisd.lock';
\$pid_file = '$am/home/var/amavisd.pid';
\$daemon_user = 'amavis';
\$daemon_group = 'amavis';
\$max_servers = $AMAVIS_SERVERS;
\$mydomain = 'bench.test';
\$myhostname = 'amavis.bench.test';
@local_domains_maps = (['example.test']);
@mynetworks = qw(127.0.0.0/8);
\$inet_socket_bind = '127.0.0.1';
\$inet_socket_port = $AMAVIS_PORT;
\$unix_socketname = undef;
@inet_acl = qw(127.0.0.1);
\$forward_method = 'smtp:[127.0.0.1]:$PF_REINJECT';
\$notify_method = \$forward_method;
\$do_syslog = 0;
\$LOGFILE = '$am/home/amavis.log';
\$log_level = 0;
@bypass_spam_checks_maps = (1);
\$enable_dkim_verification = 0;
\$enable_dkim_signing = 0;
\$final_virus_destiny = D_DISCARD;
\$virus_admin = undef;
\$QUARANTINEDIR = undef;
\$virus_quarantine_to = undef;
@av_scanners = (['ClamAV-clamd', \&ask_daemon, ["CONTSCAN {}\n", '$CLAMD_ADDRESS'],
  qr/\bOK\$/m, qr/\bFOUND\$/m, qr/^.*?: (?!Infected Archive)(.*) FOUND\$/m ]);
@av_scanners_backup = ();
1;
EOF
    # Its home is its own; its config file and directory stay root's, as amavisd insists.
    chown -R amavis:amavis "$am/home" "$AMAVIS_TMP"
    amavisd -c "$am/conf/amavisd.conf" foreground >"$am/stdout.log" 2>&1 &
    AMAVIS_PID=$!
    wait_smtp "$AMAVIS_PORT" amavisd || { cat "$am/stdout.log" "$am/home/amavis.log" >&2; exit 1; }
}

# The Postfix side of Postfix+Amavis: a second public listener whose mail goes through amavisd,
# and the listener amavisd gives it back to (no filter, no TLS on loopback, amavisd trusted).
postfix_amavis_services() {
    cat <<EOF
127.0.0.1:$PFA_PORT inet n - n - 60 smtpd
  -o content_filter=smtp-amavis:[127.0.0.1]:$AMAVIS_PORT
smtp-amavis unix - - n - $AMAVIS_SERVERS smtp
  -o smtp_data_done_timeout=1200
  -o smtp_send_xforward_command=yes
  -o smtp_tls_security_level=none
  -o max_use=20
127.0.0.1:$PF_REINJECT inet n - n - - smtpd
  -o content_filter=
  -o smtpd_tls_security_level=none
  -o mynetworks=127.0.0.0/8
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_data_restrictions=
  -o smtpd_end_of_data_restrictions=
  -o smtpd_error_sleep_time=0
  -o smtpd_soft_error_limit=1001
  -o smtpd_hard_error_limit=1000
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
  -o receive_override_options=no_header_body_checks,no_unknown_recipient_checks,no_milters
EOF
}

store_url() {
    case $STORE in
    sqlite) echo "sqlite://$WORK/passerelle/passerelle.db" ;;
    tmpfs) echo "sqlite://$SHM/passerelle.db" ;;
    postgres) echo "$DATABASE_URL" ;;
    *) log "unknown STORE=$STORE"; exit 1 ;;
    esac
}

# Passerelle with the equivalent policy: example.test relayed to the sink with TLS required,
# the local stages (limits, virus with clamd, spam), the durable embedded SQLite store.
start_passerelle() {
    local dir=$WORK/certs/$1 ps=$WORK/passerelle
    rm -rf "$ps"
    mkdir -p "$ps"
    cat >"$ps/passerelle.toml" <<EOF
[server]
hostname = "passerelle.bench.test"
node = "bench"

[[listeners]]
name = "mx"
address = "127.0.0.1:$PS_PORT"
tls = "starttls"

[session]
max_connections = 20000
max_connections_per_ip = 20000

[tls]
certificate = "$dir/cert.pem"
private_key = "$dir/key.pem"

[relay]
networks = []

[relay.domains."example.test"]
next_hop = "127.0.0.1:$SINK_PORT"
tls = "require"

[policy.inbound]
stages = ["limits", "virus", "spam"]

[policy.outbound]
stages = ["limits", "virus", "spam"]

[policy.virus]
clamd = "$([ "$CLAMD_VIA" = tcp ] && echo "$CLAMD_ADDRESS" || echo "$CLAMD_SOCKET")"

[queue]
per_destination = $PER_DESTINATION

[store]
url = "$(store_url)"
max_connections = $STORE_CONNECTIONS

[admin]
listen = "127.0.0.1:$PS_ADMIN"
EOF
    (cd "$ps" && exec "$PASSERELLE" serve --log-format json --config "$ps/passerelle.toml" \
        >"$ps/stdout.log" 2>"$ps/passerelle.log") &
    PASSERELLE_PID=$!
    for _ in $(seq 1 300); do
        grep -q '"ready"' "$ps/passerelle.log" 2>/dev/null && break
        kill -0 "$PASSERELLE_PID" 2>/dev/null || { cat "$ps/passerelle.log" >&2; exit 1; }
        sleep 0.1
    done
    wait_smtp "$PS_PORT" passerelle
}

# --- one load against one server ----------------------------------------------------------------

declare -A R # results: R[key,server,load,field,round]

# run KEY SERVER LOAD(tput|lat) ROUND
run() {
    local key=$1 server=$2 load=$3 round=$4 n c e2e=()
    if [ "$load" = tput ]; then n=$N c=$C; else n=$N_LAT c=$C_LAT; fi
    [ "$server" = sink ] || e2e=(--sink-stats "127.0.0.1:$SINK_STATS")
    local pid t0 t1 k0 k1 s0 s1 out sampler peak=$WORK/peak-$server
    pid=$(server_pid "$server")
    echo 0 >"$peak"
    sample_pss "$pid" "$peak" &
    sampler=$!
    local perf_pid= perf_data=$WORK/perf-$key.data
    if [ "$PERF" = 1 ] && [ "$server" = passerelle ] && [ "$load" = "$PERF_LOAD" ] && [ "$round" = 1 ]; then
        perf record -F 250 --call-graph dwarf,16384 -p "$pid" -o "$perf_data" \
            >"$WORK/perf-$key.log" 2>&1 &
        perf_pid=$!
        sleep 0.5
    fi
    t0=$(family_ticks "$pid")
    k0=$(proc_ticks "$CLAMD_PID")
    local p0 p1
    p0=$(family_ticks "$(postmaster)")
    s0=$(proc_ticks "$SINK_PID")
    local c0 c1
    c0=$(sink_field connections)
    out=$("$LOADGEN" load "127.0.0.1:$(server_port "$server")" -n "$n" -c "$c" -k "$K" \
        --size "$SIZE" --shape "$SHAPE" "${e2e[@]}" "${PIPELINED[@]}")
    c1=$(sink_field connections)
    t1=$(family_ticks "$pid")
    k1=$(proc_ticks "$CLAMD_PID")
    p1=$(family_ticks "$(postmaster)")
    s1=$(proc_ticks "$SINK_PID")
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
    fi
    local pss
    pss=$(cat "$peak")
    [ "$pss" -le "${R[$key,$server,peak_pss]:-0}" ] || R[$key,$server,peak_pss]=$pss
    echo "$out" >>"$WORK/loads.log"
    local result accepted
    result=$(grep '^result:' <<<"$out")
    accepted=$(sed -E 's/.* accepted=([0-9]+).*/\1/' <<<"$result")
    for f in rate e2e_rate p50_ms p99_ms client_cpu_s errors; do
        R[$key,$server,$load,$f,$round]=$(sed -E "s/.* $f=([^ ]+).*/\1/" <<<"$result")
    done
    local per=$((accepted > 0 ? accepted : 1))
    R[$key,$server,$load,cpu_ms,$round]=$(awk -v t=$((t1 - t0)) -v n=$per -v hz="$TICK" 'BEGIN {printf "%.3f", t * 1000 / hz / n}')
    R[$key,$server,$load,clamd_ms,$round]=$(awk -v t=$((k1 - k0)) -v n=$per -v hz="$TICK" 'BEGIN {printf "%.3f", t * 1000 / hz / n}')
    R[$key,$server,$load,pg_ms,$round]=$(awk -v t=$((p1 - p0)) -v n=$per -v hz="$TICK" 'BEGIN {printf "%.3f", t * 1000 / hz / n}')
    R[$key,$server,$load,conn,$round]=$(awk -v c=$((c1 - c0)) -v n=$per 'BEGIN {printf "%.3f", c / n}')
    R[$key,$server,$load,sink_ms,$round]=$(awk -v t=$((s1 - s0)) -v n=$per -v hz="$TICK" 'BEGIN {printf "%.3f", t * 1000 / hz / n}')
    if [ -n "$perf_pid" ]; then
        perf script -i "$perf_data" -F comm,tid,ip,sym 2>/dev/null |
            python3 "$BENCH_DIR/perf_phases.py" "${R[$key,$server,$load,cpu_ms,$round]}" \
                >"$WORK/phases-$key.txt"
    fi
    log "$key $server $load round $round: $(sed -E 's/^result: //' <<<"$result") server_cpu_ms_per_msg=${R[$key,$server,$load,cpu_ms,$round]}"
}

# Mean of a field over the rounds.
mean() {
    local key=$1 server=$2 load=$3 f=$4 sum=0 i
    for i in $(seq 1 "$ROUNDS"); do
        sum=$(awk -v a="$sum" -v b="${R[$key,$server,$load,$f,$i]:-0}" 'BEGIN {print a + b}')
    done
    awk -v s="$sum" -v n="$ROUNDS" 'BEGIN {printf "%.2f", s / n}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# idle SERVER COUNT KEY: memory per idle TLS session (after EHLO, STARTTLS, EHLO).
idle() {
    local server=$1 n=$2 key=$3 pid base now log=$WORK/idle-$1.log
    pid=$(server_pid "$server")
    base=$(family_pss "$pid")
    : >"$log"
    "$LOADGEN" load "127.0.0.1:$(server_port "$server")" --idle "$n" -c 50 >"$log" 2>&1 &
    IDLE_PID=$!
    for _ in $(seq 1 1200); do
        grep -q '^idle: holding' "$log" && break
        sleep 0.25
    done
    sleep 2
    now=$(family_pss "$pid")
    local opened
    opened=$(sed -nE 's/^idle: ([0-9]+) of .*/\1/p' "$log")
    opened=${opened:-0}
    stop_pid "$IDLE_PID"
    IDLE_PID=
    R[$key,$server,idle_n]=$opened
    R[$key,$server,idle_kib]=$(awk -v a="$now" -v b="$base" -v n="$opened" 'BEGIN { if (n > 0) printf "%.1f", (a - b) / n; else print "-" }')
    log "$server: $opened idle TLS sessions: PSS $base → $now KiB, ${R[$key,$server,idle_kib]} KiB each ($(grep '^idle:' "$log" | head -n 1))"
    sleep 3 # let the server close them
}

# The sink always (it is the next hop), then the servers being measured.
start_servers() {
    start_sink "$1"
    if measuring amavis; then start_amavis; fi
    if measuring postfix || measuring amavis; then start_postfix "$1"; fi
    if measuring passerelle; then start_passerelle "$1"; fi
}

# --- the run -------------------------------------------------------------------------------------

ensure_postfix
ensure_amavis
build
if [ "$CLAMD_TMP" = tmpfs ]; then
    CLAMD_SHM=$(mktemp -d /dev/shm/passerelle-clamd.XXXXXX)
    export CLAMD_TMPDIR=$CLAMD_SHM
fi
clamd_start
case $STORE in
postgres) [ -n "${DATABASE_URL:-}" ] || pg_start ;;
tmpfs) SHM=$(mktemp -d /dev/shm/passerelle-bench.XXXXXX) ;;
esac
SINK_PORT=$(free_port) SINK_STATS=$(free_port) PF_PORT=$(free_port) PS_PORT=$(free_port)
PS_ADMIN=$(free_port) PFA_PORT=$(free_port) PF_REINJECT=$(free_port) AMAVIS_PORT=$(free_port)
log "scratch directory $WORK; load: $N messages at $C connections, $N_LAT at $C_LAT; $SIZE octets, $SHAPE"
log "other load on the machine now: $(cut -d' ' -f1-3 /proc/loadavg)"

first=1
for key in $KEYS; do
    make_certs "$key"
    start_servers "$key"
    # Warm-up: processes forked, caches and the SQLite file created.
    for server in $SERVERS; do
        "$LOADGEN" load "127.0.0.1:$(server_port "$server")" -n 200 -c 10 --size "$SIZE" --shape "$SHAPE" \
            --sink-stats "127.0.0.1:$SINK_STATS" "${PIPELINED[@]}" >/dev/null
    done
    for round in $(seq 1 "$ROUNDS"); do
        for load in tput lat; do
            for server in $SERVERS; do
                run "$key" "$server" "$load" "$round"
                sleep 1
            done
        done
    done
    [ -z "$PASSERELLE_PID" ] || R[$key,passerelle,hwm_kb]=$(hwm "$PASSERELLE_PID")
    R[$key,sink,hwm_kb]=$(hwm "$SINK_PID")
    R[$key,clamd,hwm_kb]=$(hwm "$CLAMD_PID")
    if [ "$first" = 1 ] && [ "$IDLE" -gt 0 ]; then
        # Fresh servers: memory freed after the loads would hide what idle sessions take.
        stop_servers
        start_servers "$key"
        sleep 2
        for server in $SERVERS; do
            if [ "$server" = amavis ]; then
                continue # the same smtpd processes as Postfix's
            elif [ "$server" = postfix ]; then
                idle postfix "$IDLE_POSTFIX" "$key"
            else
                idle "$server" "$IDLE" "$key"
            fi
        done
    fi
    first=0
    stop_servers
done

# --- the report ----------------------------------------------------------------------------------

# The one signature a server makes per full handshake, with the set's key: rustls with ring (as
# Passerelle and the sink sign) beside OpenSSL (as Postfix signs). Timed after the loads, with
# the servers stopped.
signature_costs() {
    local key=$1 ring openssl algo
    case $key in
    ecdsa) algo=ecdsap256 ;;
    rsa) algo=rsa2048 ;;
    esac
    ring=$("$LOADGEN" sign --key "$WORK/certs/$key/key.pem" -n 1000 2>/dev/null |
        sed -n 's/.*ms_per_signature=\([0-9.]*\).*/\1/p')
    openssl=$(openssl speed -seconds 1 "$algo" 2>/dev/null |
        awk '/^rsa 2048 bits|nistp256\)/ {printf "%.4f", 1000 / $(NF-1)}')
    echo "handshake signature, $key: ${ring:-?} ms with ring (Passerelle, sink)," \
        "${openssl:-?} ms with OpenSSL (Postfix)"
}

echo
echo "Passerelle vs Postfix vs bare sink: $N messages of $SIZE octets ($SHAPE) at $C connections (throughput),"
echo "$N_LAT at $C_LAT (latency), $K message(s) per connection, STARTTLS, TLS 1.3,"
echo "$([ "$PIPELINING" = 1 ] && echo "MAIL, RCPT and DATA pipelined" || echo "one command per round trip"); Passerelle's"
echo "store: $STORE; mean of $ROUNDS alternated rounds. CPU ms/msg: the server's processes, delivery"
echo "to the sink included. out conn/msg: connections the relay opened to the sink per message."
for key in $KEYS; do
    echo
    echo "== $key certificates =="
    printf '%-11s %10s %9s %11s %9s %9s %9s %10s %13s %10s\n' server "accepted/s" "e2e/s" \
        "CPU ms/msg" "clamd ms" "p50 ms" "p99 ms" "rate@$C_LAT" "out conn/msg" "client ms"
    for server in $SERVERS; do
        printf '%-11s %10s %9s %11s %9s %9s %9s %10s %13s %10s\n' "$([ "$server" = amavis ] && echo pf+amavis || echo "$server")" \
            "$(mean "$key" "$server" tput rate)" \
            "$(mean "$key" "$server" tput e2e_rate)" \
            "$(mean "$key" "$server" tput cpu_ms)" \
            "$(case $server in passerelle|amavis) mean "$key" "$server" tput clamd_ms ;; *) echo - ;; esac)" \
            "$(mean "$key" "$server" lat p50_ms)" \
            "$(mean "$key" "$server" lat p99_ms)" \
            "$(mean "$key" "$server" lat rate)" \
            "$([ "$server" = sink ] && echo - || mean "$key" "$server" tput conn)" \
            "$(awk -v s="$(mean "$key" "$server" tput client_cpu_s)" -v n="$N" 'BEGIN {printf "%.3f", s * 1000 / n}')"
    done
    pf_rate=$(mean "$key" postfix tput rate) ps_rate=$(mean "$key" passerelle tput rate)
    pf_e2e=$(mean "$key" postfix tput e2e_rate) ps_e2e=$(mean "$key" passerelle tput e2e_rate)
    sk_rate=$(mean "$key" sink tput rate)
    pf_cpu=$(mean "$key" postfix tput cpu_ms) ps_cpu=$(mean "$key" passerelle tput cpu_ms)
    pf_p99=$(mean "$key" postfix lat p99_ms) ps_p99=$(mean "$key" passerelle lat p99_ms)
    echo "ratios (target):"
    echo "  accepted/s Passerelle/Postfix   $(ratio "$ps_rate" "$pf_rate")  (≥ 5)"
    echo "  e2e/s      Passerelle/Postfix   $(ratio "$ps_e2e" "$pf_e2e")  (≥ 5)"
    echo "  accepted/s Passerelle/sink      $(ratio "$ps_rate" "$sk_rate")  (≥ 0.50)"
    echo "  CPU/msg    Passerelle/Postfix   $(ratio "$ps_cpu" "$pf_cpu")  (≤ 0.17)"
    echo "  p99 at $C_LAT  Passerelle/Postfix   $(ratio "$ps_p99" "$pf_p99")  (≤ 0.33)"
    if measuring amavis; then
        echo "against Postfix+Amavis, which also has clamd scan every message (no target):"
        echo "  e2e/s      Passerelle/Postfix+Amavis   $(ratio "$ps_e2e" "$(mean "$key" amavis tput e2e_rate)")"
        echo "  CPU/msg    Passerelle/Postfix+Amavis   $(ratio "$ps_cpu" "$(mean "$key" amavis tput cpu_ms)")"
        echo "  clamd/msg  Passerelle/Postfix+Amavis   $(ratio "$(mean "$key" passerelle tput clamd_ms)" "$(mean "$key" amavis tput clamd_ms)")"
        echo "  p99 at $C_LAT  Passerelle/Postfix+Amavis   $(ratio "$ps_p99" "$(mean "$key" amavis lat p99_ms)")"
        echo "  peak memory, Postfix+Amavis (all their processes): $((${R[$key,amavis,peak_pss]:-0} / 1024)) MiB"
    fi
    echo "peak memory during the loads (PSS, sampled every 0.5 s; all processes for Postfix):" \
        "Postfix $((${R[$key,postfix,peak_pss]:-0} / 1024)) MiB," \
        "Passerelle $((${R[$key,passerelle,peak_pss]:-0} / 1024)) MiB" \
        "(VmHWM $((${R[$key,passerelle,hwm_kb]:-0} / 1024)) MiB)," \
        "sink $((${R[$key,sink,peak_pss]:-0} / 1024)) MiB; clamd VmHWM $((${R[$key,clamd,hwm_kb]:-0} / 1024)) MiB"
    signature_costs "$key"
    for server in $SERVERS; do
        [ -n "${R[$key,$server,idle_kib]:-}" ] || continue
        echo "idle TLS sessions, PSS added per session: $server ${R[$key,$server,idle_kib]} KiB" \
            "(${R[$key,$server,idle_n]} sessions$([ "$server" = postfix ] && echo ", a process each")$([ "$server" = passerelle ] && echo "; target ≤ 64 KiB"))"
    done
    if [ "$STORE" = postgres ]; then
        echo "PostgreSQL's processes (Passerelle's store, not in its CPU ms/msg):" \
            "$(mean "$key" passerelle tput pg_ms) ms/msg at $C connections"
    fi
    if [ -s "$WORK/phases-$key.txt" ]; then
        echo "where Passerelle's CPU goes (perf, first throughput run; perf's own cost inflates the total):"
        cat "$WORK/phases-$key.txt"
    fi
done
