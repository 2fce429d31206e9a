use serde::Deserialize;

/// `[admin]`: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// `ip:port`, loopback unless a firewall guards it (the endpoints have no authentication).
    /// Empty: no admin listener.
    pub listen: String,
}

/// `[log]`: what log lines may say.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Above debug level, write addresses as `***@domain` and leave remote replies (which often
    /// quote addresses) to the event log, which keeps them whole.
    pub redact: bool,
}

static REDACT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Log {
    /// Makes this the process's setting (called once the policy file is read).
    pub fn apply(&self) {
        REDACT.store(self.redact, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether log lines must leave addresses out.
pub fn redacting() -> bool {
    REDACT.load(std::sync::atomic::Ordering::Relaxed)
}

/// An address as a log line may show it.
pub fn show_address(address: &str) -> String {
    match (redacting(), address.rsplit_once('@')) {
        (true, Some((_, domain))) => format!("***@{domain}"),
        (true, None) => "***".to_owned(),
        (false, _) => address.to_owned(),
    }
}
