//! `passerelle queue list|show|retry|hold|release|bounce|delete`.

use crate::config::Config;
use crate::queue::admin::{Action, Entry, Filter};
use crate::queue::notice::report;
use crate::store::Store;
use crate::store::events::Recorder;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Recipients still in the queue (or with --status, any), oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// One message's recipients and where each stands.
    Show {
        message_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Make deferred recipients due now.
    Retry(Target),
    /// Keep recipients in the queue without delivering them.
    Hold(Target),
    /// Let held recipients go (due now).
    Release(Target),
    /// Fail recipients now; the sender is told by a delivery status notice.
    Bounce(Target),
    /// Remove recipients from the queue without telling anyone (the events stay).
    Delete(Target),
}

/// `passerelle quarantine …`: the messages a policy verdict held (outbound spam, or inbound spam
/// with `action = "quarantine"`). The queue commands restricted to them.
#[derive(Subcommand)]
pub enum QuarantineCommand {
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        message_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Deliver despite the verdict; the event records who released it.
    Release { message_ids: Vec<String> },
    /// Delete for good, without a notice (the events stay).
    Delete { message_ids: Vec<String> },
}

impl QuarantineCommand {
    pub fn into_queue(self) -> QueueCommand {
        let only = |ids: Vec<String>| Target {
            all: false,
            message_ids: ids,
            filter: FilterArgs {
                status: vec!["quarantined".into()],
                ..Default::default()
            },
        };
        match self {
            QuarantineCommand::List { json } => QueueCommand::List {
                filter: FilterArgs {
                    status: vec!["quarantined".into()],
                    ..Default::default()
                },
                json,
            },
            QuarantineCommand::Show { message_id, json } => QueueCommand::Show { message_id, json },
            QuarantineCommand::Release { message_ids } => QueueCommand::Release(only(message_ids)),
            QuarantineCommand::Delete { message_ids } => QueueCommand::Delete(only(message_ids)),
        }
    }
}

#[derive(Args, Default)]
pub struct FilterArgs {
    /// queued, deferred, held, delivered, failed, deleted (repeatable).
    #[arg(long)]
    status: Vec<String>,
    #[arg(long)]
    sender: Option<String>,
    #[arg(long)]
    recipient: Option<String>,
    #[arg(long)]
    domain: Option<String>,
}

#[derive(Args)]
pub struct Target {
    /// Message ids.
    message_ids: Vec<String>,
    /// Every recipient the other filters select (needed when no id is given).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

fn filter(ids: Vec<String>, f: FilterArgs) -> Filter {
    Filter {
        message_ids: ids,
        statuses: f.status,
        sender: f.sender,
        recipient: f.recipient,
        domain: f.domain,
    }
}

pub async fn run(store: &Store, config: &Config, cmd: QueueCommand) -> Result<()> {
    let (action, target) = match cmd {
        QueueCommand::List { filter: f, json } => {
            print(&store.list(&filter(Vec::new(), f)).await?, json);
            return Ok(());
        }
        QueueCommand::Show { message_id, json } => {
            let f = Filter {
                message_ids: vec![message_id.clone()],
                statuses: [
                    "queued",
                    "deferred",
                    "held",
                    "delivered",
                    "failed",
                    "deleted",
                ]
                .map(String::from)
                .to_vec(),
                ..Default::default()
            };
            let entries = store.list(&f).await?;
            if entries.is_empty() {
                bail!("no message {message_id} in the queue");
            }
            print(&entries, json);
            return Ok(());
        }
        QueueCommand::Retry(t) => (Action::Retry, t),
        QueueCommand::Hold(t) => (Action::Hold, t),
        QueueCommand::Release(t) => (Action::Release, t),
        QueueCommand::Bounce(t) => (Action::Bounce, t),
        QueueCommand::Delete(t) => (Action::Delete, t),
    };
    if target.message_ids.is_empty() && !target.all {
        bail!("name message ids, or select with --all and filters");
    }
    let rec = Recorder {
        node: config.server.node.clone(),
        config_hash: config.hash.clone(),
    };
    let by = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "cli".into());
    let changed = store
        .apply(
            &rec,
            action,
            &filter(target.message_ids, target.filter),
            &by,
        )
        .await?;
    if action == Action::Bounce {
        let ids: std::collections::BTreeSet<&str> =
            changed.iter().map(|e| e.message_id.as_str()).collect();
        let now = crate::store::now_ms();
        for id in ids {
            let Some(msg) = store.queued(id).await? else {
                continue;
            };
            let reports: Vec<_> = changed
                .iter()
                .filter(|e| e.message_id == id)
                .map(|e| {
                    let why = format!("5.0.0 returned to the sender by the administrator ({by})");
                    report(&e.recipient, crate::dsn::Action::Failed, &why, None, now)
                })
                .collect();
            let host = &config.server.hostname;
            if let Some(n) = crate::queue::notice::build(host, id, &msg, &reports, None, now) {
                store.enqueue_notice(&rec, id, &n, now).await?;
            }
        }
    }
    println!("{:?}: {} recipient(s)", action, changed.len());
    for e in &changed {
        println!("  {} <{}> was {}", e.message_id, e.recipient, e.status);
    }
    Ok(())
}

fn print(entries: &[Entry], json: bool) {
    if json {
        for e in entries {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        }
        return;
    }
    let mut last = "";
    for e in entries {
        if e.message_id != last {
            println!(
                "{}  {}  {:<8}  {:>9} bytes  from <{}>",
                e.message_id,
                super::trace::time(e.received_at),
                e.direction,
                e.size,
                e.sender
            );
            last = &e.message_id;
        }
        let reply = e.last_reply.as_deref().unwrap_or("");
        let copy = e
            .copy_of
            .as_ref()
            .map(|c| format!(" (copy of <{c}>)"))
            .unwrap_or_default();
        println!(
            "    {:<9} <{}>{copy}  attempts={}  next={}  {}",
            e.status,
            e.recipient,
            e.attempts,
            super::trace::time(e.next_attempt_at),
            reply
        );
    }
    if entries.is_empty() {
        println!("the queue is empty");
    }
}
