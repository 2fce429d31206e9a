use serde::Deserialize;

/// `[store]`: where messages, the queue and events live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// `sqlite://var/passerelle.db` (embedded, one node) or `postgres://user@host/db`.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            url: "sqlite://var/passerelle.db".into(),
            max_connections: 10,
        }
    }
}
