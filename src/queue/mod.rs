//! The queue: accepted messages wait here, per recipient, until they are delivered, fail, or
//! expire. Rows are claimed with a lease so that several nodes can share one PostgreSQL store.

pub mod admin;
pub mod delivery;
pub mod group;
pub(crate) mod handoff;
pub mod notice;
pub mod pool;
pub(crate) mod recent;
pub mod retry;
pub mod route;
mod rows;
pub mod scheduler;
pub mod store;

/// Where one recipient stands. The string forms are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// Never tried yet.
    Queued,
    /// Tried, failed temporarily, waiting for `next_attempt_at`.
    Deferred,
    Delivered,
    Failed,
    /// Kept by an administrator (`queue hold`) until released.
    Held,
    /// Removed by an administrator (`queue delete`) or deleted by a policy verdict.
    Deleted,
    /// Held by a policy verdict until an administrator releases it.
    Quarantined,
}

impl RecipientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Queued => "queued",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
            RecipientStatus::Held => "held",
            RecipientStatus::Deleted => "deleted",
            RecipientStatus::Quarantined => "quarantined",
        }
    }
}
