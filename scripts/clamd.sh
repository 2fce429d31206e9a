# Sourced by scripts/test: a throwaway clamd on loopback with the repository's own signature
# database (tests/fixtures/clamav: EICAR only), stopped by clamd_stop (safe to call twice and
# from an EXIT trap). Installs Debian's clamav-daemon when missing (as root).
#
# clamd_start exports CLAMD_ADDRESS=127.0.0.1:PORT (TCP) and CLAMD_SOCKET=/tmp/…/clamd.sock
# (the same daemon on a Unix socket). The daemon's log is $CLAMD_DIR/clamd.log.

CLAMD_BIN=/usr/sbin/clamd
CLAMD_DB="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/fixtures/clamav"

# PING over TCP on loopback: true when clamd answers PONG within two seconds.
_clamd_ping() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'nPING\n' >&3
        IFS= read -r -t 2 reply <&3 || exit 1
        [ "$reply" = PONG ]
    ) 2>/dev/null
}

_clamd_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 40000))
    fi
}

clamd_start() {
    if [ ! -x "$CLAMD_BIN" ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "scripts/test: clamd is not installed; install clamav-daemon" >&2
            return 1
        fi
        echo "scripts/test: installing clamav-daemon from Debian's packages" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clamav-daemon >/dev/null
    fi
    CLAMD_DIR=$(mktemp -d /tmp/passerelle-clamd.XXXXXX)
    local attempt port
    # A port can be taken between choosing it and clamd binding it: try again with another.
    for attempt in 1 2 3; do
        port=$(_clamd_free_port)
        {
            echo "TCPSocket $port"
            echo "TCPAddr 127.0.0.1"
            echo "LocalSocket $CLAMD_DIR/clamd.sock"
            echo "DatabaseDirectory $CLAMD_DB"
            # CLAMD_TMPDIR: where clamd writes each stream before scanning it (a tmpfs is faster).
            echo "TemporaryDirectory ${CLAMD_TMPDIR:-$CLAMD_DIR}"
            echo "LogFile $CLAMD_DIR/clamd.log"
            echo "PidFile $CLAMD_DIR/clamd.pid"
            echo "Foreground yes"
            # Above the 50 MB message limit: past it INSTREAM answers "size limit exceeded. ERROR".
            echo "StreamMaxLength 60M"
            # Encrypted archives pass unscanned (recorded by the gateway), not as Heuristics.Encrypted.
            echo "AlertEncrypted no"
            echo "MaxThreads ${CLAMD_THREADS:-8}"
            echo "SelfCheck 0"
            if [ "$(id -u)" -eq 0 ]; then
                echo "User root"
            fi
        } >"$CLAMD_DIR/clamd.conf"
        "$CLAMD_BIN" -c "$CLAMD_DIR/clamd.conf" >"$CLAMD_DIR/stdout.log" 2>&1 &
        CLAMD_PID=$!
        # With the two-signature database clamd answers in well under a second; allow 30 s.
        local i
        for i in $(seq 1 300); do
            if _clamd_ping "$port"; then
                export CLAMD_ADDRESS="127.0.0.1:$port"
                export CLAMD_SOCKET="$CLAMD_DIR/clamd.sock"
                echo "scripts/test: clamd on $CLAMD_ADDRESS and $CLAMD_SOCKET" >&2
                return 0
            fi
            if ! kill -0 "$CLAMD_PID" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        if kill -0 "$CLAMD_PID" 2>/dev/null; then
            echo "scripts/test: clamd did not answer PING within 30 s" >&2
            break
        fi
        wait "$CLAMD_PID" 2>/dev/null || true
        CLAMD_PID=
        echo "scripts/test: clamd exited (attempt $attempt)" >&2
    done
    cat "$CLAMD_DIR/stdout.log" >&2 || true
    clamd_stop
    return 1
}

clamd_stop() {
    if [ -n "${CLAMD_PID:-}" ]; then
        kill "$CLAMD_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$CLAMD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$CLAMD_PID" 2>/dev/null || true
        wait "$CLAMD_PID" 2>/dev/null || true
    fi
    if [ -n "${CLAMD_DIR:-}" ]; then
        rm -rf "$CLAMD_DIR"
    fi
    CLAMD_PID=
    CLAMD_DIR=
    unset CLAMD_ADDRESS CLAMD_SOCKET
}
