#!/usr/bin/env python3
"""clamd's own CPU per scan for each way Passerelle can hand it a message.

    . scripts/clamd.sh && CLAMD_TMPDIR=/dev/shm clamd_start   # or without CLAMD_TMPDIR: disk
    python3 bench/clamd_protocols.py [SCANS_PER_SESSION] [SESSIONS] [ROUNDS]
    clamd_stop

Each session is an IDSESSION kept open, as Passerelle keeps them; the message is a 10 KiB
one-part text mail, a new one for every scan (its own Message-ID), as on a gateway: clamd keeps
the hashes of files it found clean and answers a file it has seen from that cache, so scanning
one message over and over measures the cache, not a scan. Three protocols, alternated for
ROUNDS rounds: INSTREAM over TCP, INSTREAM over the Unix socket, FILDES (a memfd's descriptor)
over the Unix socket. Then, over FILDES, two references that split a scan's cost: the same
message every time (`cached`: the request, the hashing and the cache lookup, no scan) and the
body alone (`body-only`: a text file, which clamd scans without its mail parser). clamd's CPU is
read from /proc/PID/stat around each run, so the client's own cost (Python) does not count.
"""

import itertools
import os
import socket
import struct
import sys
import threading
import time

SCANS = int(sys.argv[1]) if len(sys.argv) > 1 else 500
SESSIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 2

TCP = os.environ["CLAMD_ADDRESS"]
UNIX = os.environ["CLAMD_SOCKET"]
PID = int(open(os.path.join(os.path.dirname(UNIX), "clamd.pid")).read())
TICK = os.sysconf("SC_CLK_TCK")

WORDS = "patient report results clinic tomorrow the of and appointment referral".split()
LINES = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) for i in range(200)]
BODY = "\r\n".join(LINES) + "\r\n"
SIZE = 10240
SCAN = itertools.count()


def message(kind):
    """The message of one scan: a new one each time unless `cached`; no header with `body-only`."""
    if kind == "cached":
        return ("From: a@example.org\r\nTo: b@example.net\r\nSubject: results\r\n\r\n" + BODY).encode()[:SIZE]
    n = next(SCAN)
    if kind == "body-only":
        return f"Scan {n} at {time.time()}\r\n{BODY}".encode()[:SIZE]
    head = (
        "From: a@example.org\r\nTo: b@example.net\r\nSubject: results\r\n"
        f"Message-ID: <{n}.{time.time()}@bench.test>\r\n\r\n"
    )
    return (head + BODY).encode()[:SIZE]


def clamd_ticks():
    fields = open(f"/proc/{PID}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def session(protocol):
    kind = protocol
    if protocol in ("cached", "body-only"):
        protocol = "fildes"
    if protocol == "instream-tcp":
        host, port = TCP.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    else:
        s = socket.socket(socket.AF_UNIX)
        s.connect(UNIX)
    s.sendall(b"zIDSESSION\0")
    for _ in range(SCANS):
        data = message(kind)
        if protocol == "fildes":
            fd = os.memfd_create("scan")
            os.pwrite(fd, data, 0)
            socket.send_fds(s, [b"zFILDES\0\0"], [fd])
        else:
            s.sendall(b"zINSTREAM\0" + struct.pack(">I", len(data)) + data + b"\0" * 4)
        reply = b""
        while not reply.endswith(b"\0"):
            reply += s.recv(256)
        if protocol == "fildes":
            os.close(fd)
        assert reply.endswith(b" OK\0"), reply
    s.close()


def run(protocol):
    before, started = clamd_ticks(), time.time()
    threads = [threading.Thread(target=session, args=(protocol,)) for _ in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    scans = SCANS * SESSIONS
    cpu_ms = (clamd_ticks() - before) * 1000 / TICK / scans
    rate = scans / (time.time() - started)
    print(f"{protocol:14} clamd {cpu_ms:.3f} ms/scan  {rate:7.0f} scans/s", flush=True)


print(f"{SESSIONS} sessions x {SCANS} scans of {SIZE} octets, {ROUNDS} rounds")
for _ in range(ROUNDS):
    for protocol in ("instream-tcp", "instream-unix", "fildes", "cached", "body-only"):
        run(protocol)
