use serde::Deserialize;

/// `[server]`: who this node is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// The name in our greeting, EHLO reply and `Received:` headers. Default: the system host name.
    pub hostname: String,
    /// This node's name in events and queue leases; unique among nodes sharing one store.
    /// Default: the host name.
    pub node: String,
}

impl Default for Server {
    fn default() -> Self {
        let host = gethostname();
        Server {
            hostname: host.clone(),
            node: host,
        }
    }
}

fn gethostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
