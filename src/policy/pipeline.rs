//! Runs a direction's stages in order, each within a time bound; merges their verdicts; applies
//! the changes to the message once.

use super::verdict::strongest;
use super::{Action, Change, Facts, Stage, Verdict};
use crate::smtp::reply::Reply;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Pipeline {
    stages: Vec<Arc<dyn Stage>>,
    timeout: Duration,
}

/// The merged result of one phase.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: Action,
    /// The stage whose verdict decided, and why (empty when nothing objected).
    pub decided_by: &'static str,
    pub reason: String,
    /// Every verdict worth recording, in the order the stages ran.
    pub verdicts: Vec<Verdict>,
}

impl Outcome {
    fn merge(verdicts: Vec<Verdict>) -> Outcome {
        let (action, decided_by, reason) = match strongest(&verdicts) {
            Some(v) => (v.action.clone(), v.stage, v.reason.clone()),
            None => (Action::Continue, "", String::new()),
        };
        Outcome {
            action,
            decided_by,
            reason,
            verdicts: verdicts
                .into_iter()
                .filter(Verdict::is_noteworthy)
                .collect(),
        }
    }

    /// The message with every stage's changes applied, in one place.
    pub fn apply(&self, raw: &[u8]) -> Vec<u8> {
        let changes: Vec<&Change> = self.verdicts.iter().flat_map(|v| &v.changes).collect();
        let mut message = changes
            .iter()
            .rev()
            .find_map(|c| match c {
                Change::Replace(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| raw.to_vec());
        for c in &changes {
            match c {
                Change::AddHeader(name, value) => message = add_header(&message, name, value),
                Change::TagSubject(tag) => message = tag_subject(&message, tag),
                Change::Replace(_) => {}
            }
        }
        message
    }
}

impl Pipeline {
    pub fn new(stages: Vec<Arc<dyn Stage>>, timeout: Duration) -> Pipeline {
        Pipeline { stages, timeout }
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    pub async fn connect(&self, facts: &Facts) -> Outcome {
        self.run(|s| s.on_connect(facts)).await
    }

    pub async fn mail(&self, facts: &Facts) -> Outcome {
        self.run(|s| s.on_mail(facts)).await
    }

    pub async fn data(&self, facts: &Facts, raw: &[u8]) -> Outcome {
        let mut verdicts: Vec<Verdict> = Vec::new();
        for stage in &self.stages {
            let v = self
                .bounded(stage.name(), stage.on_data(facts, raw, &verdicts))
                .await;
            let stop = matches!(v.action, Action::Reject(_) | Action::Tempfail(_));
            verdicts.push(v);
            if stop {
                break;
            }
        }
        Outcome::merge(verdicts)
    }

    async fn run<'a, F>(&'a self, hook: F) -> Outcome
    where
        F: Fn(&'a Arc<dyn Stage>) -> super::StageFuture<'a>,
    {
        let mut verdicts = Vec::new();
        for stage in &self.stages {
            let v = self.bounded(stage.name(), hook(stage)).await;
            let stop = matches!(v.action, Action::Reject(_) | Action::Tempfail(_));
            verdicts.push(v);
            if stop {
                break;
            }
        }
        Outcome::merge(verdicts)
    }

    /// A stage that errs or does not answer in time makes the message temp-fail: nothing passes
    /// unchecked because a checker was down.
    async fn bounded(&self, name: &'static str, fut: super::StageFuture<'_>) -> Verdict {
        let failed = |why: String| {
            tracing::warn!(stage = name, %why, "policy stage failed; the client is told 451");
            Verdict::new(name).action(
                Action::Tempfail(Reply::new(
                    451,
                    "4.7.1",
                    "temporary policy failure, try again later",
                )),
                why,
            )
        };
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, fut).await;
        metrics::histogram!("passerelle_stage_seconds", "stage" => name)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => failed(format!("{name} failed: {e:#}")),
            Err(_) => failed(format!("{name} did not answer within {:?}", self.timeout)),
        }
    }
}

/// The end of the header block (the index of the empty line's CRLF), or the message's end.
fn header_end(m: &[u8]) -> usize {
    m.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(m.len())
}

/// Inserts `name: value` after the first header field (our `Received:`).
fn add_header(m: &[u8], name: &str, value: &str) -> Vec<u8> {
    let end = header_end(m);
    let mut at = 0;
    // The first field ends at the first CRLF not followed by folding white space.
    while let Some(i) = m[at..end].windows(2).position(|w| w == b"\r\n") {
        at += i + 2;
        if !matches!(m.get(at), Some(b' ' | b'\t')) {
            break;
        }
    }
    let line = format!("{name}: {}\r\n", value.replace(['\r', '\n'], " "));
    [&m[..at], line.as_bytes(), &m[at..]].concat()
}

/// Puts `[tag] ` in front of the Subject, or adds `Subject: [tag]` when there is none.
fn tag_subject(m: &[u8], tag: &str) -> Vec<u8> {
    let end = header_end(m);
    let mut line_start = 0;
    while line_start < end {
        let rest = &m[line_start..end];
        if rest.len() >= 8 && rest[..8].eq_ignore_ascii_case(b"subject:") {
            let mut value = line_start + 8;
            if m.get(value) == Some(&b' ') {
                value += 1;
            }
            let prefix = format!("[{tag}] ");
            return [&m[..value], prefix.as_bytes(), &m[value..]].concat();
        }
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => line_start += i + 2,
            None => break,
        }
    }
    add_header(m, "Subject", &format!("[{tag}]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from a\r\n\tby b; date\r\nFrom: x@y.test\r\nSubject: Hello\r\n\r\nSubject: body\r\n";

    #[test]
    fn headers_go_below_our_received() {
        let m = add_header(MSG, "X-Passerelle-Score", "62 (A=1)");
        assert!(m.starts_with(
            b"Received: from a\r\n\tby b; date\r\nX-Passerelle-Score: 62 (A=1)\r\nFrom:"
        ));
    }

    #[test]
    fn subject_is_tagged_in_the_header_only() {
        let m = tag_subject(MSG, "Suspect Spam");
        let text = String::from_utf8(m).unwrap();
        assert!(
            text.contains("\r\nSubject: [Suspect Spam] Hello\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nSubject: body\r\n"), "{text}");
        let none = tag_subject(b"Received: x\r\nFrom: a\r\n\r\nbody", "S");
        assert!(
            String::from_utf8(none)
                .unwrap()
                .contains("Subject: [S]\r\nFrom: a")
        );
    }

    #[test]
    fn replace_then_headers() {
        let v = Verdict {
            changes: vec![
                Change::Replace(b"Received: r\r\nSubject: new\r\n\r\nclean\r\n".to_vec()),
                Change::TagSubject("T".into()),
            ],
            ..Verdict::new("x")
        };
        let o = Outcome::merge(vec![v]);
        assert_eq!(
            o.apply(MSG),
            b"Received: r\r\nSubject: [T] new\r\n\r\nclean\r\n"
        );
    }
}
