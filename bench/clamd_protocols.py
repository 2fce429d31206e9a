#!/usr/bin/env python3
"""clamd's own CPU per scan for each way Passerelle can hand it a message.

    . scripts/clamd.sh && CLAMD_TMPDIR=/dev/shm clamd_start   # or without CLAMD_TMPDIR: disk
    python3 bench/clamd_protocols.py [SCANS_PER_SESSION] [SESSIONS] [ROUNDS]
    clamd_stop

Each session is an IDSESSION kept open, as Passerelle keeps them; the message is a 10 KiB
one-part text mail. Three protocols, alternated for ROUNDS rounds: INSTREAM over TCP, INSTREAM
over the Unix socket, FILDES (a memfd's descriptor) over the Unix socket. clamd's CPU is read
from /proc/PID/stat around each run, so the client's own cost (Python) does not count.
"""

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
MESSAGE = (
    "From: a@example.org\r\nTo: b@example.net\r\nSubject: results\r\n\r\n"
    + "\r\n".join(LINES)
    + "\r\n"
).encode()[:10240]


def clamd_ticks():
    fields = open(f"/proc/{PID}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def session(protocol):
    if protocol == "instream-tcp":
        host, port = TCP.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    else:
        s = socket.socket(socket.AF_UNIX)
        s.connect(UNIX)
    s.sendall(b"zIDSESSION\0")
    for _ in range(SCANS):
        if protocol == "fildes":
            fd = os.memfd_create("scan")
            os.pwrite(fd, MESSAGE, 0)
            socket.send_fds(s, [b"zFILDES\0\0"], [fd])
        else:
            s.sendall(b"zINSTREAM\0" + struct.pack(">I", len(MESSAGE)) + MESSAGE + b"\0" * 4)
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


print(f"{SESSIONS} sessions x {SCANS} scans of {len(MESSAGE)} octets, {ROUNDS} rounds")
for _ in range(ROUNDS):
    for protocol in ("instream-tcp", "instream-unix", "fildes"):
        run(protocol)
