//! Accept loops: connection limits (global and per IP), then one task per session. On an MX
//! listener the session starts in plaintext and must STARTTLS; on an implicit-TLS listener
//! (submission, RFC 8314) the handshake comes before the greeting.

use super::connection::Connection;
use super::reply;
use super::session::{Next, Session};
use crate::config::ListenerTls;
use crate::daemon::Context;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;

/// Connection limits shared by all listeners.
pub struct Limits {
    global: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// New connections per minute per address.
    rate: super::rate::RateLimit,
    /// Refusals being written at once; past it, a refused connection is just closed, so that a
    /// flood costs no more than this many tasks.
    refusing: Arc<Semaphore>,
}

const MAX_REFUSING: usize = 256;

/// Held for the life of a connection; gives its places back on drop.
pub struct Admission {
    _global: OwnedSemaphorePermit,
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.lock().expect("not poisoned");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    pub fn new(session: &crate::config::Session) -> Arc<Self> {
        Arc::new(Limits {
            global: Arc::new(Semaphore::new(session.max_connections)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: session.max_connections_per_ip,
            rate: super::rate::RateLimit::new(session.max_connection_rate_per_ip),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        })
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, reply::Reply> {
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| reply::too_many_connections())?;
        let mut map = self.per_ip.lock().expect("not poisoned");
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(reply::too_many_from_you());
        }
        *n += 1;
        Ok(Admission {
            _global: global,
            limits: self.clone(),
            ip,
        })
    }
}

pub struct Listener {
    pub name: String,
    pub kind: ListenerTls,
    pub socket: TcpListener,
}

/// Accepts until shutdown. Each session holds a clone of `done`; the daemon waits for all of
/// them to be dropped.
pub async fn run(
    ctx: Arc<Context>,
    listener: Listener,
    acceptor: TlsAcceptor,
    limits: Arc<Limits>,
    done: mpsc::Sender<()>,
) {
    let mut shutdown = ctx.shutdown.subscribe();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let ip = peer.ip().to_canonical();
        let admitted = if ctx.relay.authorised(ip) || limits.rate.allow(ip) {
            limits.admit(ip)
        } else {
            Err(reply::connecting_too_fast())
        };
        let admission = match admitted {
            Ok(a) => a,
            Err(refusal) => {
                metrics::counter!("passerelle_connections_total", "listener" => listener.name.clone(), "result" => "refused_limit").increment(1);
                tracing::info!(%peer, listener = %listener.name, reply = %refusal, "connection refused");
                if let Ok(permit) = limits.refusing.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, refusal).await;
                        drop(permit);
                    });
                }
                continue;
            }
        };
        let ctx = ctx.clone();
        let (name, kind, acceptor, done) = (
            listener.name.clone(),
            listener.kind,
            acceptor.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            let limit = ctx.config.session.max_duration;
            let session = handle(ctx, stream, peer, name.clone(), kind, acceptor);
            if tokio::time::timeout(limit, session).await.is_err() {
                tracing::info!(%peer, listener = %name, "session cut off: longer than session.max_duration");
            }
            drop(admission);
            drop(done);
        });
    }
}

async fn refuse(mut stream: TcpStream, r: reply::Reply) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = stream.write_all(&r.to_wire()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn handle(
    ctx: Arc<Context>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: String,
    kind: ListenerTls,
    acceptor: TlsAcceptor,
) {
    let started = Instant::now();
    let write_timeout = ctx.config.session.command_timeout;
    let open = metrics::gauge!("passerelle_connections_open");
    open.increment(1.0);
    let _open = scopeguard(move || open.decrement(1.0));
    let mut session = Session::new(ctx.clone(), peer, listener.clone());
    metrics::counter!("passerelle_connections_total", "listener" => listener.clone(), "result" => "accepted").increment(1);
    // The connect phase runs before the greeting, so that abusers are refused cheaply.
    if let Some(refusal) = session.connect_policy().await {
        metrics::counter!("passerelle_connections_total", "listener" => listener.clone(), "result" => "refused_policy").increment(1);
        tracing::info!(%peer, %listener, reply = %refusal, "connection refused by policy");
        let mut stream = stream;
        let _ = stream.write_all(&refusal.to_wire()).await;
        return;
    }
    let result = match kind {
        ListenerTls::Starttls => {
            let mut conn = Connection::new(stream, write_timeout);
            let served = AssertUnwindSafe(greet_and_serve(&mut session, &mut conn))
                .catch_unwind()
                .await;
            survive(&mut conn, &peer, served)
                .await
                .map(|next| (next, conn))
        }
        ListenerTls::Implicit => Ok((Next::StartTls, Connection::new(stream, write_timeout))),
    };
    let result = match result {
        Ok((Next::StartTls, conn)) => {
            // Plaintext pipelined after STARTTLS is dropped with the connection's buffer.
            let tcp = conn.into_inner();
            let timeout = ctx.config.session.tls_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let facts = ctx.client_certs.facts(tls.get_ref().1);
                    metrics::counter!("passerelle_tls_sessions_total", "version" => facts.version.clone()).increment(1);
                    session.tls_started(facts);
                    let mut conn = Connection::new(tls, write_timeout);
                    let served = if kind == ListenerTls::Implicit {
                        AssertUnwindSafe(greet_and_serve(&mut session, &mut conn))
                            .catch_unwind()
                            .await
                    } else {
                        AssertUnwindSafe(session.serve(&mut conn))
                            .catch_unwind()
                            .await
                    };
                    survive(&mut conn, &peer, served).await.map(|_| ())
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            }
        }
        Ok((Next::Close, _)) => Ok(()),
        Err(e) => Err(e),
    };
    tracing::info!(
        %peer,
        %listener,
        tls = %session.tls.as_ref().map(|t| t.version.as_str()).unwrap_or("none"),
        user = %session.user().map(crate::config::show_address).unwrap_or_default(),
        recipients = session.recipients(),
        messages = %session.accepted().join(","),
        duration_ms = started.elapsed().as_millis() as u64,
        outcome = %match &result { Ok(()) => "closed".to_owned(), Err(e) => e.to_string() },
        "session ended"
    );
}

/// A panic in a session's code (a bug a client found) ends that session with `421 4.3.0`, never
/// the daemon nor the other sessions: the unwinding stops here, where the connection is still ours
/// to answer on. Whatever that session had not yet committed is not acknowledged.
async fn survive<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    peer: &SocketAddr,
    served: Result<std::io::Result<Next>, Box<dyn std::any::Any + Send>>,
) -> std::io::Result<Next> {
    let panic = match served {
        Ok(result) => return result,
        Err(panic) => panic,
    };
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(%peer, panic = %what, "a session panicked; it is closed with 421, the daemon goes on");
    metrics::counter!("passerelle_session_panics_total").increment(1);
    let _ = conn.send(&reply::internal_error()).await;
    Err(std::io::Error::other("the session panicked"))
}

/// Runs `f` when dropped: the open-connections gauge goes down however the session ends.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

async fn greet_and_serve<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    conn: &mut Connection<S>,
) -> std::io::Result<Next> {
    conn.send(&reply::greeting(&session.ctx.config.server.hostname))
        .await?;
    session.serve(conn).await
}
