//! Boot order and graceful stop: load and check the config → certificate → store → migrate →
//! take back this node's leases → bind every listener (all or nothing) → scheduler → accept;
//! on SIGTERM/SIGINT stop accepting, let sessions finish (bounded), let the scheduler give back
//! its leases, exit 0.

use crate::config::Config;
use crate::queue::scheduler;
use crate::relay::RelayRules;
use crate::shutdown::Shutdown;
use crate::smtp::listener::{self, Limits, Listener};
use crate::store::Store;
use crate::store::events::Recorder;
use crate::tls::{self, ClientTls};
use anyhow::{Context as _, Result};
use hickory_resolver::TokioResolver;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;

/// How long sessions still open at shutdown may take to finish.
const SESSION_GRACE: Duration = Duration::from_secs(30);

/// Everything a session or a delivery needs, shared.
pub struct Context {
    pub config: Config,
    pub relay: RelayRules,
    pub store: Store,
    pub recorder: Recorder,
    pub resolver: TokioResolver,
    pub client_tls: ClientTls,
    /// Wakes the scheduler when a message is queued.
    pub queue_notify: Notify,
    /// Idle outbound connections, reused across messages to the same host.
    pub pool: crate::queue::pool::Pool,
    /// The key of signed return paths, shared by every node through the store (`batv.rs`).
    pub batv_key: Vec<u8>,
    /// DKIM signers for outbound mail, by From: domain.
    pub dkim: crate::dkim::Signers,
    /// Failed AUTH attempts per address.
    pub auth_failures: crate::smtp::auth::Failures,
    /// Messages per minute per address (`session.max_message_rate_per_ip`).
    pub message_rate: crate::smtp::rate::RateLimit,
    /// The people of our domains, checked at RCPT, and their delegates.
    pub directory: crate::directory::Directory,
    /// Tells which CA issued a client's certificate (relay partner, trust-space peer).
    pub client_certs: crate::tls::ClientCerts,
    /// The policy stages of each direction.
    pub inbound: crate::policy::Pipeline,
    pub outbound: crate::policy::Pipeline,
    pub shutdown: Shutdown,
}

impl Context {
    pub fn pipeline(&self, direction: crate::envelope::Direction) -> &crate::policy::Pipeline {
        match direction {
            crate::envelope::Direction::Inbound => &self.inbound,
            crate::envelope::Direction::Outbound => &self.outbound,
        }
    }
}

pub async fn serve(config: Config) -> Result<()> {
    tracing::info!(
        config = %config.path.display(),
        config_hash = %config.hash,
        node = %config.server.node,
        "starting"
    );
    tls::ensure_certificate(&config)?;
    let server_tls = tls::server_config(&config)?;
    let store = Store::connect(&config.store.url, config.store.max_connections).await?;
    store.migrate().await?;
    // Leases this node held when it last stopped (a crash) are ours to take back now.
    let released = store.release(&config.server.node).await?;
    if released > 0 {
        tracing::info!(recipients = released, "took back this node's queue leases");
    }

    let mut bound = Vec::new();
    for l in &config.listeners {
        let socket = listen(&l.address)
            .with_context(|| format!("listener {}: cannot listen on {}", l.name, l.address))?;
        tracing::info!(
            listener = %l.name,
            address = %socket.local_addr()?,
            tls = ?l.tls,
            "listening"
        );
        bound.push(Listener {
            name: l.name.clone(),
            kind: l.tls,
            socket,
        });
    }

    let resolver = crate::dns::resolver(&config.dns)?;
    let batv_key = store
        .setting("batv_key", || hex::encode(rand::random::<[u8; 32]>()))
        .await?;
    let batv_key = hex::decode(batv_key).context("the stored return-path key is not hex")?;
    let (inbound, outbound) = crate::policy::build(&config, &store, &resolver)?;
    let ctx = Arc::new(Context {
        relay: RelayRules::new(&config.relay),
        directory: crate::directory::Directory::new(&config.directory, store.clone()),
        resolver,
        inbound,
        outbound,
        client_tls: tls::client_configs(&config)?,
        client_certs: tls::ClientCerts::new(&config)?,
        recorder: Recorder {
            node: config.server.node.clone(),
            config_hash: config.hash.clone(),
        },
        store,
        queue_notify: Notify::new(),
        pool: crate::queue::pool::Pool::new(config.queue.per_destination),
        auth_failures: Default::default(),
        message_rate: crate::smtp::rate::RateLimit::new(config.session.max_message_rate_per_ip),
        dkim: crate::dkim::Signers::load(&config.dkim)?,
        batv_key,
        shutdown: Shutdown::default(),
        config,
    });

    if !ctx.config.admin.listen.is_empty() {
        let socket = TcpListener::bind(&ctx.config.admin.listen)
            .await
            .with_context(|| format!("admin: cannot listen on {}", ctx.config.admin.listen))?;
        tracing::info!(listener = "admin", address = %socket.local_addr()?, "listening");
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .context("installing the metrics recorder")?;
        tokio::spawn(crate::admin::run(ctx.clone(), socket, handle));
    }
    let scheduler = tokio::spawn(scheduler::run(ctx.clone()));
    let upkeep = tokio::spawn(crate::upkeep::run(ctx.clone()));
    let limits = Limits::new(&ctx.config.session);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let acceptor = TlsAcceptor::from(server_tls);
    let mut accepting = Vec::new();
    for l in bound {
        accepting.push(tokio::spawn(listener::run(
            ctx.clone(),
            l,
            acceptor.clone(),
            limits.clone(),
            done_tx.clone(),
        )));
    }
    drop(done_tx);
    tracing::info!("ready");

    wait_for_signal().await;
    tracing::info!("stopping: no new connections; open sessions may finish");
    ctx.shutdown.trigger();
    for a in accepting {
        let _ = a.await;
    }
    if tokio::time::timeout(SESSION_GRACE, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("sessions still open after the grace period were cut off");
    }
    let _ = scheduler.await;
    let _ = upkeep.await;
    crate::upkeep::seal_events(&ctx, &mut None).await;
    ctx.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            // Postfix habit: `reload`. Policy changes here take a restart, which loses nothing.
            _ = hup.recv() => tracing::warn!(
                "SIGHUP ignored: the policy is read at start; restart (SIGTERM, then start) to apply changes"
            ),
        }
    }
}

/// Listen queue for SMTP listeners: a burst of connections larger than Tokio's default (1024)
/// waits in the kernel to be accepted (and refused with a reply) instead of being dropped
/// half-open. The kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

fn listen(address: &str) -> std::io::Result<TcpListener> {
    let addr: std::net::SocketAddr = address
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
