use serde::Deserialize;

/// `[store]`: where messages, the queue and events live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// `sqlite://var/passerelle.db` (embedded, one node) or `postgres://user@host/db`.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a message's body is kept after its last recipient reached a final state
    /// (delivered, bounced, deleted); then it is purged. Its events are kept.
    #[serde(with = "humantime_serde")]
    pub retention: std::time::Duration,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            url: "sqlite://var/passerelle.db".into(),
            max_connections: 10,
            retention: std::time::Duration::from_secs(90 * 86_400),
        }
    }
}
