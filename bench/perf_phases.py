#!/usr/bin/env python3
"""Where Passerelle's CPU time goes, from a perf profile with call stacks.

    perf record -F 250 --call-graph dwarf,16384 -p PID -o perf.data    (during a load)
    perf script -i perf.data -F comm,tid,ip,sym | bench/perf_phases.py [CPU_MS_PER_MESSAGE]

Each sample goes to the first phase below whose marker appears anywhere in its stack (samples on
sqlx's SQLite worker threads are split by whether they are inside fsync). With the measured CPU
time per message, each share is also shown in milliseconds per message.
"""

import collections
import sys

# (phase, markers, thread name or None), in priority order.
PHASES = [
    ("SQLite: fsync (sqlx worker threads)", ["fsync"], "sqlx-sqlite-wor"),
    ("SQLite: statements, thread hand-offs (sqlx worker threads)", [""], "sqlx-sqlite-wor"),
    ("inbound TLS handshake", ["tokio_rustls::server::Accept", "rustls::server::hs",
                               "rustls::server::tls13"], None),
    ("delivery: claim, outbound TLS, SMTP client, finish", ["queue::delivery", "mail_send",
                                                            "queue::scheduler", "queue::pool",
                                                            "rustls::client"], None),
    ("virus stage: MIME walk, clamd connections", ["policy::virus"], None),
    ("spam stage", ["policy::spam"], None),
    ("limits stage", ["policy::limits"], None),
    ("DATA decoding", ["DataDecoder"], None),
    ("enqueue, async side (events as JSON)", ["queue::store", "store::events"], None),
    ("logging", ["tracing_subscriber"], None),
    ("metrics", ["metrics::", "metrics_exporter"], None),
    ("SMTP session I/O and TLS records", ["smtp::session", "smtp::connection",
                                          "smtp::listener", "tokio_rustls"], None),
    ("tokio scheduling, kernel, other", [""], None),
]


def samples(lines):
    """Yields (thread name, stack text) per sample of `perf script` output."""
    comm, stack = None, []
    for line in lines:
        if line.strip() and not line[0].isspace():
            if comm is not None:
                yield comm, "\n".join(stack)
            comm, stack = line.split()[0], []
        elif line.strip():
            stack.append(line.strip())
    if comm is not None:
        yield comm, "\n".join(stack)


def phase(comm, stack):
    for name, markers, thread in PHASES:
        if thread is not None and thread != comm:
            continue
        if any(m in stack for m in markers):
            return name
    return PHASES[-1][0]


def main():
    per_message = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    counts = collections.Counter(phase(c, s) for c, s in samples(sys.stdin))
    total = sum(counts.values())
    if total == 0:
        print("  no samples")
        return
    for name, _, _ in PHASES:
        share = counts[name] / total
        ms = f"  {per_message * share:5.2f} ms/msg" if per_message else ""
        print(f"  {name:60s} {100 * share:5.1f} %{ms}")
    print(f"  ({total} samples)")


if __name__ == "__main__":
    main()
