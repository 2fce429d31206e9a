//! Scans over clamd connections kept open between messages (clamd's `IDSESSION`).
//!
//! clamav-client opens a connection per scan. Under load that is a connect, an accept, a close
//! and a thread hand-off in clamd for every message: measured with one client sending 10 KiB
//! messages one after the other, a session cut clamd's CPU per scan by 12 % (0.33 → 0.29 ms)
//! and the time to a reply by 18 %. The protocol is small enough to speak here: `zIDSESSION`,
//! then for each scan a command; clamd answers `<request number>: <name>: OK` (or `… FOUND`,
//! `… ERROR`), NUL-terminated.
//!
//! Over TCP each scan is an `INSTREAM`: the data in length-prefixed chunks and a zero length,
//! which clamd writes to a file in its `TemporaryDirectory` before scanning it. Over clamd's
//! Unix socket the data goes into a memory file (memfd) whose descriptor is passed with
//! `FILDES`: clamd scans it where it is, with no file of its own to create, write and remove —
//! measured under load, those were 30 % of clamd's CPU per 10 KiB message even on a tmpfs. Should
//! clamd refuse a descriptor (built without descriptor passing) and take the same data as a
//! stream, scans go as streams from then on.
//!
//! Each session keeps its memory file for the next scan, rewritten in place: creating one and
//! closing it (which frees its pages) for every scan was half of what a scan cost Passerelle
//! (perf, 10 KiB messages with an HTML version: 87 of 165 samples in `scan_one`). A file that
//! held more than [`KEEP_FILE`] octets is not kept, so idle sessions hold little memory.
//!
//! A session clamd has closed meanwhile (its `IdleTimeout`, a restart) fails on first use; the
//! scan is then sent again once on a new connection. Sessions idle for longer than [`IDLE`] are
//! not used again, and one that ended in anything but `OK` or `FOUND` is closed (clamd closes
//! it too after an error). The caller bounds the whole call in time; a call cut short drops its
//! connection.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

/// Less than clamd's default `IdleTimeout` (30 s), so that clamd does not close a session just
/// as it is taken.
const IDLE: std::time::Duration = std::time::Duration::from_secs(10);
/// Idle sessions kept at most; a burst above this opens more, closed after use.
const MAX_IDLE: usize = 64;
/// The request buffer of each session: a message this size goes out in one write, a larger one
/// in a write per chunk. Kept small, as every idle session holds one.
const BUFFER: usize = 32 << 10;
/// A reply longer than this is not clamd's.
const MAX_REPLY: usize = 4096;
/// A memory file is written this much at a time, other tasks running in between: a 50 MB
/// message does not hold a runtime thread for its whole copy.
const WRITE_PIECE: usize = 1 << 20;
/// A session's memory file is kept for the next scan up to this size.
const KEEP_FILE: usize = 256 << 10;

#[derive(Debug, Clone)]
pub(crate) enum Address {
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(address) => f.write_str(address),
            Address::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One clamd's idle sessions.
#[derive(Debug)]
pub(crate) struct Sessions {
    address: Address,
    idle: Mutex<Vec<Session>>,
    /// Scans on the Unix socket pass a descriptor (`FILDES`) until clamd refuses one.
    fildes: AtomicBool,
}

/// The request is written through a buffer: clamd reads every connection from one polling
/// thread and would wake once per piece (command, length, chunk, end) otherwise.
enum Conn {
    Tcp(BufWriter<TcpStream>),
    Unix(BufWriter<UnixStream>),
}

struct Session {
    conn: Conn,
    /// Requests sent on this session so far: clamd numbers its replies with it.
    requests: u64,
    since: Instant,
    /// The memory file of the last descriptor scan, and how many octets it holds.
    file: Option<(std::fs::File, usize)>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("requests", &self.requests)
            .finish()
    }
}

impl Sessions {
    pub(crate) fn new(address: Address) -> Sessions {
        let fildes = matches!(address, Address::Unix(_));
        Sessions {
            address,
            idle: Mutex::new(Vec::new()),
            fildes: AtomicBool::new(fildes),
        }
    }

    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    /// Scans `data` and returns clamd's reply without its request number (`stream: OK`,
    /// `fd[12]: OK`).
    pub(crate) async fn scan(&self, data: &[u8], chunk: usize) -> io::Result<String> {
        if !self.fildes.load(Ordering::Relaxed) {
            return self.request(data, chunk, false).await;
        }
        let reply = self.request(data, chunk, true).await?;
        if !reply.ends_with(" ERROR") {
            return Ok(reply);
        }
        // The same data as a stream: if that scans, it was the descriptor clamd could not take.
        let streamed = self.request(data, chunk, false).await?;
        if !streamed.ends_with(" ERROR") && self.fildes.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                clamd = %self.address,
                refused = %reply,
                "clamd does not take file descriptors; scans go as streams (INSTREAM) from now on"
            );
        }
        Ok(streamed)
    }

    async fn request(&self, data: &[u8], chunk: usize, fildes: bool) -> io::Result<String> {
        // An idle session that fails was closed by clamd since its last use: the scan goes
        // again, once, on a new connection.
        if let Some(mut s) = self.take()
            && let Ok(reply) = s.request(data, chunk, fildes).await
        {
            self.give_back(s, &reply);
            return Ok(reply);
        }
        let mut s = self.open().await?;
        let reply = s.request(data, chunk, fildes).await?;
        self.give_back(s, &reply);
        Ok(reply)
    }

    fn take(&self) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|s| s.since.elapsed() < IDLE);
        idle.pop()
    }

    fn give_back(&self, mut s: Session, reply: &str) {
        if !(reply.ends_with(" OK") || reply.ends_with(" FOUND")) {
            return;
        }
        s.since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
    }

    async fn open(&self) -> io::Result<Session> {
        let mut conn = match &self.address {
            Address::Tcp(address) => {
                let tcp = TcpStream::connect(address.as_str()).await?;
                tcp.set_nodelay(true)?;
                Conn::Tcp(BufWriter::with_capacity(BUFFER, tcp))
            }
            Address::Unix(path) => Conn::Unix(BufWriter::with_capacity(
                BUFFER,
                UnixStream::connect(path).await?,
            )),
        };
        // Sent with the first request, in the same write.
        match &mut conn {
            Conn::Tcp(w) => w.write_all(b"zIDSESSION\0").await?,
            Conn::Unix(w) => w.write_all(b"zIDSESSION\0").await?,
        }
        Ok(Session {
            conn,
            requests: 0,
            since: Instant::now(),
            file: None,
        })
    }
}

impl Session {
    /// One scan: `FILDES` when asked for and the session is on the Unix socket, else `INSTREAM`.
    async fn request(&mut self, data: &[u8], chunk: usize, fildes: bool) -> io::Result<String> {
        self.requests += 1;
        match &mut self.conn {
            Conn::Unix(w) if fildes => {
                let file = memory_file(self.file.take(), data).await?;
                // A new session's IDSESSION goes first, on its own.
                w.flush().await?;
                // The descriptor rides on the byte after the command, as clamd expects it.
                send_with_fd(w.get_ref(), b"zFILDES\0\0", file.as_fd()).await?;
                let reply = read_reply(w.get_mut(), self.requests).await?;
                // clamd has read it: it answers only once it is done with the file.
                if data.len() <= KEEP_FILE {
                    self.file = Some((file, data.len()));
                }
                Ok(reply)
            }
            Conn::Unix(w) => instream(w, data, chunk, self.requests).await,
            Conn::Tcp(w) => instream(w, data, chunk, self.requests).await,
        }
    }
}
/// `INSTREAM`: the data in length-prefixed chunks, then a zero length.
async fn instream<S: AsyncRead + AsyncWrite + Unpin>(
    w: &mut BufWriter<S>,
    data: &[u8],
    chunk: usize,
    request: u64,
) -> io::Result<String> {
    w.write_all(b"zINSTREAM\0").await?;
    for piece in data.chunks(chunk.max(1)) {
        w.write_all(&(piece.len() as u32).to_be_bytes()).await?;
        w.write_all(piece).await?;
    }
    w.write_all(&[0; 4]).await?;
    w.flush().await?;
    read_reply(w.get_mut(), request).await
}

/// The NUL-terminated reply to request number `request`, without that number.
async fn read_reply<S: AsyncRead + Unpin>(r: &mut S, request: u64) -> io::Result<String> {
    let mut reply = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !reply.ends_with(b"\0") {
        let n = r.read(&mut buf).await?;
        if n == 0 || reply.len() + n > MAX_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "clamd closed the session without a reply",
            ));
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply[..reply.len() - 1]);
    let prefix = format!("{request}: ");
    match text.strip_prefix(&prefix) {
        Some(rest) => Ok(rest.trim().to_string()),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("reply out of sequence: {text}"),
        )),
    }
}

/// `data` in an anonymous memory file, for clamd to read from its start: `reuse` (a file and
/// the octets it holds) rewritten in place when there is one, a new file otherwise.
async fn memory_file(
    reuse: Option<(std::fs::File, usize)>,
    data: &[u8],
) -> io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let (mut file, held) = match reuse {
        Some(kept) => kept,
        None => {
            let fd = rustix::fs::memfd_create("passerelle-scan", rustix::fs::MemfdFlags::CLOEXEC)?;
            (std::fs::File::from(fd), 0)
        }
    };
    for (i, piece) in data.chunks(WRITE_PIECE).enumerate() {
        if i > 0 {
            tokio::task::yield_now().await;
        }
        file.write_all_at(piece, (i * WRITE_PIECE) as u64)?;
    }
    if held > data.len() {
        file.set_len(data.len() as u64)?;
    }
    // The descriptor clamd gets shares the file's offset: a reader that moved it last time
    // must start from the beginning again.
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// Sends `bytes` in one message carrying `fd` (`SCM_RIGHTS`).
async fn send_with_fd(
    stream: &UnixStream,
    bytes: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let fds = [fd];
    loop {
        stream.writable().await?;
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg(
                stream,
                &[io::IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "clamd's socket took part of a FILDES command",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    /// A clamd that speaks sessions: answers each INSTREAM with `reply(n)` (n from 1 per
    /// connection) and closes the connection after `per_connection` of them. Counts connections.
    async fn fake(
        per_connection: u64,
        reply: fn(u64) -> String,
    ) -> (Address, std::sync::Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = Address::Tcp(listener.local_addr().unwrap().to_string());
        let connections = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut command = [0u8; 11];
                    s.read_exact(&mut command).await.unwrap();
                    assert_eq!(&command, b"zIDSESSION\0");
                    for n in 1..=per_connection {
                        let mut command = [0u8; 10];
                        if s.read_exact(&mut command).await.is_err() {
                            return;
                        }
                        assert_eq!(&command, b"zINSTREAM\0");
                        loop {
                            let len = s.read_u32().await.unwrap() as usize;
                            if len == 0 {
                                break;
                            }
                            let mut data = vec![0; len];
                            s.read_exact(&mut data).await.unwrap();
                        }
                        let text = format!("{}\0", reply(n));
                        s.write_all(text.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (address, connections)
    }

    #[tokio::test]
    async fn one_session_serves_scan_after_scan() {
        let (address, connections) = fake(100, |n| format!("{n}: stream: OK")).await;
        let sessions = Sessions::new(address);
        for _ in 0..3 {
            let reply = sessions.scan(&[7; 5000], 2048).await.unwrap();
            assert_eq!(reply, "stream: OK");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_session_closed_by_clamd_is_replaced_without_failing_the_scan() {
        let (address, connections) = fake(1, |n| format!("{n}: stream: Eicar FOUND")).await;
        let sessions = Sessions::new(address);
        for _ in 0..3 {
            let reply = sessions.scan(b"x", 2048).await.unwrap();
            assert_eq!(reply, "stream: Eicar FOUND");
        }
        // Each scan after the first found its session closed, and opened another.
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_session_that_ended_in_an_error_is_not_used_again() {
        let (address, connections) =
            fake(100, |n| format!("{n}: INSTREAM size limit exceeded. ERROR")).await;
        let sessions = Sessions::new(address);
        for _ in 0..2 {
            let reply = sessions.scan(b"x", 2048).await.unwrap();
            assert_eq!(reply, "INSTREAM size limit exceeded. ERROR");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_reply_out_of_sequence_is_an_error() {
        let (address, _) = fake(100, |_| "stream: OK".into()).await;
        let err = Sessions::new(address).scan(b"x", 2048).await.unwrap_err();
        assert!(err.to_string().contains("out of sequence"), "{err}");
    }

    /// A clamd on a Unix socket that logs each request (command, data) and answers OK; with
    /// `refuse_fd`, it answers a FILDES with an error and closes the session, as a clamd built
    /// without descriptor passing would.
    fn fake_unix(refuse_fd: bool) -> (Address, Log, tempfile::TempDir) {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clamd.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let log = Log::default();
        let logged = log.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let (s, log) = (s.unwrap(), logged.clone());
                std::thread::spawn(move || {
                    let (mut buf, mut fds) = (Vec::<u8>::new(), Vec::<OwnedFd>::new());
                    // Reads until `buf` holds `n` bytes, collecting any descriptors passed.
                    let fill = |buf: &mut Vec<u8>, fds: &mut Vec<OwnedFd>, n: usize| {
                        while buf.len() < n {
                            let mut space = [std::mem::MaybeUninit::uninit();
                                rustix::cmsg_space!(ScmRights(1))];
                            let mut control = RecvAncillaryBuffer::new(&mut space);
                            let mut chunk = [0u8; 65536];
                            let got = recvmsg(
                                &s,
                                &mut [io::IoSliceMut::new(&mut chunk)],
                                &mut control,
                                RecvFlags::empty(),
                            )
                            .unwrap();
                            if got.bytes == 0 {
                                return false;
                            }
                            for m in control.drain() {
                                if let RecvAncillaryMessage::ScmRights(passed) = m {
                                    fds.extend(passed);
                                }
                            }
                            buf.extend_from_slice(&chunk[..got.bytes]);
                        }
                        true
                    };
                    let take = |buf: &mut Vec<u8>, n: usize| buf.drain(..n).collect::<Vec<_>>();
                    assert!(fill(&mut buf, &mut fds, 11));
                    assert_eq!(take(&mut buf, 11), b"zIDSESSION\0");
                    for n in 1.. {
                        if !fill(&mut buf, &mut fds, 9) {
                            return;
                        }
                        let reply = if buf.starts_with(b"zFILDES\0\0") {
                            take(&mut buf, 9);
                            let file = std::fs::File::from(fds.remove(0));
                            let mut data = Vec::new();
                            // As a careless reader would: from the shared offset, moving it.
                            std::io::Read::read_to_end(&mut &file, &mut data).unwrap();
                            let inode =
                                std::os::unix::fs::MetadataExt::ino(&file.metadata().unwrap());
                            log.lock().unwrap().push(("FILDES", data, inode));
                            if refuse_fd {
                                let text =
                                    format!("{n}: FILDES: didn't receive file descriptor. ERROR\0");
                                let _ = std::io::Write::write_all(&mut &s, text.as_bytes());
                                return;
                            }
                            format!("{n}: fd[5]: OK\0")
                        } else {
                            assert!(fill(&mut buf, &mut fds, 10));
                            assert_eq!(take(&mut buf, 10), b"zINSTREAM\0");
                            let mut data = Vec::new();
                            loop {
                                assert!(fill(&mut buf, &mut fds, 4));
                                let len = u32::from_be_bytes(take(&mut buf, 4).try_into().unwrap());
                                if len == 0 {
                                    break;
                                }
                                assert!(fill(&mut buf, &mut fds, len as usize));
                                data.extend(take(&mut buf, len as usize));
                            }
                            log.lock().unwrap().push(("INSTREAM", data, 0));
                            format!("{n}: stream: OK\0")
                        };
                        std::io::Write::write_all(&mut &s, reply.as_bytes()).unwrap();
                    }
                });
            }
        });
        (Address::Unix(path), log, dir)
    }

    /// Each request's command, the data clamd read, and the memory file's inode (0 for a stream).
    type Log = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, Vec<u8>, u64)>>>;

    #[tokio::test]
    async fn over_the_unix_socket_the_data_goes_as_a_descriptor() {
        let (address, log, _dir) = fake_unix(false);
        let sessions = Sessions::new(address);
        // Above one write piece of the memory file, and small.
        let big: Vec<u8> = (0..WRITE_PIECE * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        for data in [&b"From: a\r\n\r\nhi\r\n"[..], &big, b"x"] {
            assert_eq!(sessions.scan(data, 2048).await.unwrap(), "fd[5]: OK");
        }
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 3);
        assert!(log.iter().all(|(command, _, _)| *command == "FILDES"));
        assert_eq!(log[1].1, big, "clamd read the memory file from its start");
    }

    #[tokio::test]
    async fn a_session_rewrites_its_memory_file_for_the_next_scan() {
        let (address, log, _dir) = fake_unix(false);
        let sessions = Sessions::new(address);
        let medium = vec![b'm'; 100_000];
        let large = vec![b'l'; KEEP_FILE + 1];
        let scans: [&[u8]; 6] = [
            b"From: a\r\n\r\nhello\r\n",
            b"x",
            &medium,
            b"yz",
            &large,
            b"w",
        ];
        for data in scans {
            assert_eq!(sessions.scan(data, 2048).await.unwrap(), "fd[5]: OK");
        }
        let log = log.lock().unwrap();
        let read: Vec<&[u8]> = log.iter().map(|(_, data, _)| &data[..]).collect();
        assert_eq!(read, scans, "each scan read exactly its own data");
        let inodes: Vec<u64> = log.iter().map(|(_, _, inode)| *inode).collect();
        // One file for the four first scans and the large one; a new one after it.
        assert!(inodes[..5].iter().all(|&i| i == inodes[0]), "{inodes:?}");
        assert_ne!(inodes[5], inodes[0], "{inodes:?}");
    }

    #[tokio::test]
    async fn a_clamd_that_refuses_descriptors_gets_streams_from_then_on() {
        let (address, log, _dir) = fake_unix(true);
        let sessions = Sessions::new(address);
        for data in [b"one", b"two"] {
            assert_eq!(sessions.scan(data, 2048).await.unwrap(), "stream: OK");
        }
        let commands: Vec<_> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(c, d, _)| (*c, d.clone()))
            .collect();
        assert_eq!(
            commands,
            [
                ("FILDES", b"one".to_vec()),
                ("INSTREAM", b"one".to_vec()),
                ("INSTREAM", b"two".to_vec())
            ]
        );
    }
}
