use serde::Deserialize;

/// `[admin]`: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// `ip:port`, loopback unless a firewall guards it (the endpoints have no authentication).
    /// Empty: no admin listener.
    pub listen: String,
}
