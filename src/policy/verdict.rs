//! What a stage decides, and how the decisions of several stages are merged.

use crate::smtp::reply::Reply;
use serde_json::Value;

/// A named contribution to the spam score (may be negative).
pub use super::spam::Rule;

/// What should happen to the connection, transaction or message. Ordered from weakest to
/// strongest: the merged outcome is the strongest action any stage asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No objection.
    Continue,
    /// Keep the message out of delivery until an administrator releases it.
    Quarantine,
    /// Accept (`250`) and delete; `notify` tells the sender why (outbound spam and viruses).
    Delete { notify: bool },
    /// Refuse for now (4xx).
    Tempfail(Reply),
    /// Refuse (5xx).
    Reject(Reply),
}

impl Action {
    fn rank(&self) -> u8 {
        match self {
            Action::Continue => 0,
            Action::Quarantine => 1,
            Action::Delete { .. } => 2,
            Action::Tempfail(_) => 3,
            Action::Reject(_) => 4,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::Continue => "continue",
            Action::Quarantine => "quarantine",
            Action::Delete { notify: false } => "delete",
            Action::Delete { notify: true } => "delete-notify",
            Action::Tempfail(_) => "tempfail",
            Action::Reject(_) => "reject",
        }
    }
}

/// A change to the message, applied once by the pipeline after every stage has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The whole message replaced (an infected attachment removed).
    Replace(Vec<u8>),
    /// A header added at the top, below our `Received:`.
    AddHeader(String, String),
    /// Text put in front of the Subject (`Suspect Spam`).
    TagSubject(String),
}

/// One stage's decision, with its reason for the event log.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub stage: &'static str,
    pub action: Action,
    /// Plain words: why.
    pub reason: String,
    /// Spam-score contributions for the spam stage to add up.
    pub rules: Vec<Rule>,
    pub changes: Vec<Change>,
    /// Facts for the event (scores, findings, results).
    pub detail: Value,
}

impl Verdict {
    pub fn new(stage: &'static str) -> Self {
        Verdict {
            stage,
            action: Action::Continue,
            reason: String::new(),
            rules: Vec::new(),
            changes: Vec::new(),
            detail: Value::Null,
        }
    }

    pub fn action(mut self, action: Action, reason: impl Into<String>) -> Self {
        self.action = action;
        self.reason = reason.into();
        self
    }

    /// Worth an event: it decided something, scored, or changed the message.
    pub fn is_noteworthy(&self) -> bool {
        self.action != Action::Continue
            || !self.rules.is_empty()
            || !self.changes.is_empty()
            || !self.reason.is_empty()
    }
}

/// The strongest action among the verdicts, and the stage that asked for it.
pub fn strongest(verdicts: &[Verdict]) -> Option<&Verdict> {
    verdicts
        .iter()
        .filter(|v| v.action != Action::Continue)
        .max_by_key(|v| v.action.rank())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_beats_tempfail_beats_delete_beats_quarantine() {
        let v = |stage, action| Verdict::new(stage).action(action, "x");
        let r = Reply::new(550, "5.7.1", "no");
        let t = Reply::new(451, "4.7.1", "later");
        let all = [
            v("a", Action::Quarantine),
            v("b", Action::Delete { notify: false }),
            v("c", Action::Tempfail(t.clone())),
            v("d", Action::Reject(r.clone())),
            v("e", Action::Continue),
        ];
        assert_eq!(strongest(&all).unwrap().stage, "d");
        assert_eq!(strongest(&all[..3]).unwrap().stage, "c");
        assert_eq!(strongest(&all[..2]).unwrap().stage, "b");
        assert_eq!(strongest(&all[..1]).unwrap().stage, "a");
        assert!(strongest(&all[4..]).is_none());
    }
}
