//! The one resolver: every lookup the daemon makes goes through it, so pointing `[dns]` at a
//! test server redirects them all at once.

use crate::config::Dns;
use anyhow::{Context, Result};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::net::SocketAddr;

pub fn resolver(cfg: &Dns) -> Result<TokioResolver> {
    let mut builder = if cfg.nameservers.is_empty() {
        TokioResolver::builder_tokio().context("reading /etc/resolv.conf")?
    } else {
        let servers = cfg
            .nameservers
            .iter()
            .filter_map(|s| s.parse::<SocketAddr>().ok())
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = cfg.timeout;
    opts.attempts = cfg.attempts;
    // Mail domains are always fully qualified: never try search suffixes.
    opts.ndots = 0;
    builder.build().context("building the DNS resolver")
}
