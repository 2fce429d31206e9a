# Sourced by scripts/test: a throwaway PostgreSQL on loopback, stopped when the shell exits.
# Installs Debian's postgresql when missing (as root). PostgreSQL refuses to run as root, so
# the server runs as the `postgres` user that package creates.

pg_start() {
    local initdb
    initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$initdb" ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "scripts/test: PostgreSQL is not installed; install postgresql or set DATABASE_URL" >&2
            return 1
        fi
        echo "scripts/test: installing postgresql from Debian's packages" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        initdb=$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
    fi
    local bin as
    bin=$(dirname "$initdb")
    PG_DIR=$(mktemp -d /tmp/passerelle-pg.XXXXXX)
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$PG_DIR"
        as="runuser -u postgres --"
    else
        as=""
    fi
    PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    $as "$bin/initdb" -D "$PG_DIR/data" -A trust -U postgres >"$PG_DIR/initdb.log" 2>&1 ||
        { cat "$PG_DIR/initdb.log" >&2; return 1; }
    # fsync stays on: the durability tests mean nothing without it.
    $as "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
        -o "-k $PG_DIR -h 127.0.0.1 -p $PG_PORT -c max_connections=300" start >/dev/null ||
        { cat "$PG_DIR/log" >&2; return 1; }
    PG_STOP="$as $bin/pg_ctl -D $PG_DIR/data -m fast stop"
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    echo "scripts/test: PostgreSQL on 127.0.0.1:$PG_PORT" >&2
}

pg_stop() {
    if [ -n "${PG_STOP:-}" ]; then
        $PG_STOP >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}
