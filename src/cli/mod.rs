//! The command line: `serve`, `check-config`, `migrate`, `trace`.

mod directory;
mod events;
mod queue;
mod report;
mod spam;
mod trace;

use crate::config::{self, Config};
use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "passerelle", version, about = "A secure mail gateway")]
pub struct Cli {
    /// The policy file.
    #[arg(
        long,
        short,
        global = true,
        env = "PASSERELLE_CONFIG",
        default_value = "/etc/passerelle/passerelle.toml"
    )]
    config: PathBuf,
    /// Log lines for people or for machines.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT.
    Serve,
    /// Check the policy file: every error with its key path; exit 1 if there is any.
    CheckConfig {
        /// The file a running node was started with: print what the new file changes.
        #[arg(long)]
        against: Option<PathBuf>,
    },
    /// Apply the store's migrations and exit (`serve` also does it at start).
    Migrate,
    /// Queue operations: list, show, retry, hold, release, bounce, delete.
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Score messages offline with the daemon's spam rules and model.
    Score(spam::ScoreArgs),
    /// Train the spam model on labelled folders of mail.
    TrainSpam {
        #[command(flatten)]
        corpus: spam::Labelled,
        /// Where to write the model (then point `policy.spam.model` at it).
        #[arg(long)]
        out: PathBuf,
    },
    /// Cross-validate the spam rules and model on labelled folders; print the figures.
    SpamReport {
        #[command(flatten)]
        corpus: spam::Labelled,
        #[arg(long, default_value_t = 5)]
        folds: usize,
    },
    /// Read a password on standard input and print its argon2 hash for `[relay.users]`.
    HashPassword,
    /// Messages held by a policy verdict: list, show, release, delete.
    Quarantine {
        #[command(subcommand)]
        command: queue::QuarantineCommand,
    },
    /// Where every accepted message is now, per direction; lists any message not accounted for
    /// (exit 3 then).
    Report {
        /// Only messages received since: a duration back (`24h`, `7d`), a date or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The tamper-evident event log.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Purge the bodies of messages final for longer than `store.retention` (the daemon does it
    /// every hour); events are kept.
    Purge {
        /// List what would be purged, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// The recipient directory of our domains and its delegations: import, list, add, remove,
    /// delegate, undelegate, lookup.
    Directory {
        #[command(subcommand)]
        command: directory::DirectoryCommand,
    },
    /// Print the story of one message from the event store.
    Trace {
        /// The id from our `250 2.0.0 queued as <id>` reply or `Received:` header.
        message_id: String,
        /// One JSON object per event instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Check every node's hash chain; name the first event that breaks it (exit 3 then).
    Verify {
        #[arg(long)]
        json: bool,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    if let Command::HashPassword = cli.command {
        let mut password = String::new();
        if std::io::stdin().read_line(&mut password).is_err() {
            return ExitCode::from(1);
        }
        let password = password.trim_end_matches(['\r', '\n']);
        return match crate::smtp::auth::hash_password(password) {
            Ok(h) => {
                println!("{h}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        };
    }
    crate::tls::install_provider();
    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(1);
        }
    };
    config.log.apply();
    if let Command::CheckConfig { against } = &cli.command {
        // The files exist (validation said so); they must also parse and match.
        let t = &config.tls;
        let present = t.certificate.exists() || t.private_key.exists();
        if let Err(e) = present
            .then(|| crate::tls::server_config(&config))
            .transpose()
        {
            eprintln!("{}: tls: {e:#}", cli.config.display());
            return ExitCode::from(1);
        }
        if let Some(old) = against {
            let texts = std::fs::read_to_string(old)
                .map_err(|e| format!("{}: {e}", old.display()))
                .and_then(|o| {
                    let new = std::fs::read_to_string(&cli.config).map_err(|e| e.to_string())?;
                    config::diff::diff(&o, &new)
                });
            match texts {
                Ok(lines) if lines.is_empty() => println!("no change from {}", old.display()),
                Ok(lines) => {
                    let hash = std::fs::read(old)
                        .map(|b| config::file_hash(&b))
                        .unwrap_or_default();
                    println!("changes from {} (hash {hash}):", old.display());
                    for l in lines {
                        println!("  {l}");
                    }
                }
                Err(e) => {
                    eprintln!("cannot compare: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        println!(
            "{}: OK ({} listeners, {} domains, store {}, hash {})",
            cli.config.display(),
            config.listeners.len(),
            config.relay.domains.len(),
            config::redact_url(&config.store.url),
            config.hash
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(command: Command, config: Config) -> Result<ExitCode> {
    match command {
        Command::Serve => crate::daemon::serve(config)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Migrate => {
            let store =
                crate::store::Store::connect(&config.store.url, config.store.max_connections)
                    .await?;
            store.migrate().await?;
            println!(
                "migrations applied to {}",
                config::redact_url(&config.store.url)
            );
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace { message_id, json } => {
            let store = open_store(&config).await?;
            let found = trace::print(&store, &message_id, json).await?;
            store.close().await;
            Ok(if found {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Quarantine { command } => {
            let store = open_store(&config).await?;
            let done = queue::run(&store, &config, command.into_queue()).await;
            // A running daemon seals these events too; whichever comes first wins.
            let _ = store.seal(&config.server.node).await;
            store.close().await;
            done.map(|()| ExitCode::SUCCESS)
        }
        Command::Queue { command } => {
            let store = open_store(&config).await?;
            let done = queue::run(&store, &config, command).await;
            let _ = store.seal(&config.server.node).await;
            store.close().await;
            done.map(|()| ExitCode::SUCCESS)
        }
        Command::Report { since, json } => {
            let since = since.as_deref().map(report::parse_since).transpose()?;
            let store = open_store(&config).await?;
            let all = report::report(&store, since, json).await;
            store.close().await;
            Ok(if all? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Events {
            command: EventsCommand::Verify { json },
        } => {
            let store = open_store(&config).await?;
            let holds = events::verify(&store, json).await;
            store.close().await;
            Ok(if holds? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Purge { dry_run, json } => {
            let store = open_store(&config).await?;
            let done = report::purge(&store, &config, dry_run, json).await;
            store.close().await;
            done.map(|()| ExitCode::SUCCESS)
        }
        Command::Directory { command } => {
            let store = open_store(&config).await?;
            let done = directory::run(&store, &config, command).await;
            store.close().await;
            done.map(|()| ExitCode::SUCCESS)
        }
        Command::Score(args) => spam::score(&config, args).map(|()| ExitCode::SUCCESS),
        Command::TrainSpam { corpus, out } => {
            spam::train_model(corpus, out).map(|()| ExitCode::SUCCESS)
        }
        Command::SpamReport { corpus, folds } => {
            spam::report(corpus, folds).map(|()| ExitCode::SUCCESS)
        }
        Command::CheckConfig { .. } | Command::HashPassword => Ok(ExitCode::SUCCESS),
    }
}

/// The store for an admin command: it must already be migrated (by `serve` or `migrate`).
async fn open_store(config: &Config) -> Result<crate::store::Store> {
    let store =
        crate::store::Store::connect(&config.store.url, config.store.max_connections).await?;
    if !store.is_current().await {
        anyhow::bail!(
            "the store {} is not migrated: run `passerelle migrate` (or start `serve`) first",
            config::redact_url(&config.store.url)
        );
    }
    Ok(store)
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
