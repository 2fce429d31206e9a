use serde::Deserialize;
use std::time::Duration;

/// `[queue]`: how long and how often we try.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// Waits between attempts; the last one repeats until `lifetime` is over.
    #[serde(deserialize_with = "durations")]
    pub retry: Vec<Duration>,
    /// After this long in the queue a recipient fails for good.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// How long a node owns the recipients it claimed; another node takes them over after this.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often the scheduler claims from the store unprompted: for what other nodes and the
    /// queue commands made due (its own retries and new mail it learns of at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Deliveries in flight at once on this node.
    pub concurrency: usize,
    /// Recipients claimed in one batch.
    pub batch: usize,
    /// Deliveries in flight at once to one destination domain.
    pub per_destination: usize,
    /// Send the sender one "still trying" notice when a recipient is still deferred this long
    /// after it was queued. Unset: no delay notices.
    #[serde(with = "humantime_serde")]
    pub warn_after: Option<Duration>,
}

impl Default for Queue {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Queue {
            retry: vec![m(5), m(10), m(20), m(40), m(60)],
            lifetime: Duration::from_secs(5 * 24 * 3600),
            lease: m(5),
            poll_interval: Duration::from_secs(5),
            concurrency: 20,
            batch: 100,
            per_destination: 5,
            warn_after: None,
        }
    }
}

/// `["5m", "10m"]` → durations.
fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let texts: Vec<String> = Vec::deserialize(d)?;
    texts
        .iter()
        .map(|t| {
            humantime::parse_duration(t)
                .map_err(|e| serde::de::Error::custom(format!("\"{t}\": {e}")))
        })
        .collect()
}
