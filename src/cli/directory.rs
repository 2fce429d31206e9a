//! `passerelle directory import|list|add|remove|delegate|undelegate|lookup`: the people of our
//! domains (checked at RCPT when `[directory] enabled = true`) and their delegates.

use crate::config::Config;
use crate::directory::{self, Directory, check_address};
use crate::store::Store;
use anyhow::{Result, bail};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DirectoryCommand {
    /// Load a CSV file with the header `address,name,delegates` (name and delegates optional,
    /// delegates separated by `;`). Each address is added or updated; with a delegates column,
    /// its delegates become the file's. One transaction: a bad line imports nothing.
    Import {
        file: PathBuf,
        /// Make the directory exactly the file: addresses not in it are removed, with their
        /// delegations.
        #[arg(long)]
        replace: bool,
    },
    /// Every address with its name and delegates.
    List {
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Add an address (or set the name of one already there).
    Add {
        address: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove an address, with its delegations from and to it.
    Remove { address: String },
    /// DELEGATE receives a copy of the inbound mail for ADDRESS.
    Delegate { address: String, delegate: String },
    /// Stop the copies to DELEGATE.
    Undelegate { address: String, delegate: String },
    /// Whether the daemon would accept ADDRESS, asking the table then LDAP as it does.
    Lookup { address: String },
}

pub async fn run(store: &Store, config: &Config, command: DirectoryCommand) -> Result<()> {
    let ours = |domain: &str| config.relay.domains.contains_key(domain);
    // An address of ours, normalised, or an error naming the argument.
    let our_address = |what: &str, raw: &str| -> Result<String> {
        let address = check_address(raw).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        if !ours(domain) {
            bail!("{what}: {address} is not in one of our domains (relay.domains)");
        }
        Ok(address)
    };
    match command {
        DirectoryCommand::Import { file, replace } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let parsed = match directory::parse_csv(&text, ours) {
                Ok(p) => p,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{}: {e}", file.display());
                    }
                    bail!(
                        "{}: {} bad line(s); nothing imported",
                        file.display(),
                        errors.len()
                    );
                }
            };
            let done = store.directory_import(&parsed, replace).await?;
            print!(
                "imported {} address(es) from {}: {} added, {} updated",
                parsed.lines.len(),
                file.display(),
                done.added,
                done.updated
            );
            if replace {
                print!(", {} removed", done.removed);
            }
            if parsed.has_delegates {
                print!(", {} delegation(s)", done.delegations);
            }
            println!();
        }
        DirectoryCommand::List { json } => {
            let entries = store.directory_list().await?;
            for e in &entries {
                if json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    let mut line = e.address.clone();
                    if !e.name.is_empty() {
                        line.push_str(&format!("  {:?}", e.name));
                    }
                    if e.added_at == 0 {
                        line.push_str("  (not in the table)");
                    }
                    if !e.delegates.is_empty() {
                        line.push_str(&format!("  copies to {}", e.delegates.join(", ")));
                    }
                    println!("{line}");
                }
            }
            if entries.is_empty() && !json {
                println!("the directory table is empty");
            }
        }
        DirectoryCommand::Add { address, name } => {
            let address = our_address("address", &address)?;
            if store.directory_add(&address, name.as_deref()).await? {
                println!("added {address}");
            } else {
                println!("{address} was already in the directory");
            }
        }
        DirectoryCommand::Remove { address } => {
            let address = directory::normalise(&address);
            match store.directory_remove(&address).await? {
                (false, 0) => bail!("{address} is not in the directory"),
                (_, delegations) => {
                    println!("removed {address} ({delegations} delegation(s) with it)")
                }
            }
        }
        DirectoryCommand::Delegate { address, delegate } => {
            let address = our_address("address", &address)?;
            let delegate = our_address("delegate", &delegate)?;
            if address == delegate {
                bail!("{address} cannot be its own delegate");
            }
            if store.delegation_add(&address, &delegate).await? {
                println!("{delegate} now receives a copy of the mail for {address}");
            } else {
                println!("{delegate} already received a copy of the mail for {address}");
            }
        }
        DirectoryCommand::Undelegate { address, delegate } => {
            let (address, delegate) = (
                directory::normalise(&address),
                directory::normalise(&delegate),
            );
            if !store.delegation_remove(&address, &delegate).await? {
                bail!("{delegate} is not a delegate of {address}");
            }
            println!("{delegate} no longer receives copies of the mail for {address}");
        }
        DirectoryCommand::Lookup { address } => {
            let address = directory::normalise(&address);
            let dir = Directory::new(&config.directory, store.clone());
            match dir.lookup(&address).await {
                Ok(known) if known.is_known() => {
                    println!("{address}: known ({})", known.as_str())
                }
                Ok(_) => bail!("{address}: unknown (RCPT would get 550 5.1.1)"),
                Err(e) => bail!("{address}: {e} (RCPT would get 451 4.4.3)"),
            }
        }
    }
    Ok(())
}
