//! The directory's SQL: the `directory` and `delegations` tables (migration 0005). Addresses
//! arrive here already normalised (lower case).

use super::csv::Parsed;
use crate::store::{Store, now_ms};
use anyhow::Result;
use sqlx::{Any, Row, Transaction};
use std::collections::{BTreeMap, HashSet};

/// One person of the directory, with the addresses that receive a copy of their mail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub address: String,
    pub name: String,
    pub delegates: Vec<String>,
    /// Unix milliseconds.
    pub added_at: i64,
}

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    pub added: usize,
    pub updated: usize,
    /// Addresses not in the file, removed by `--replace`.
    pub removed: usize,
    /// Delegations written from the file.
    pub delegations: usize,
}

impl Store {
    pub async fn directory_has(&self, address: &str) -> Result<bool> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT address FROM directory WHERE address = $1")
                .bind(address)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Adds an address, or sets the name of one already there (when `name` is given). True when
    /// it was added.
    pub async fn directory_add(&self, address: &str, name: Option<&str>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let added = upsert(&mut tx, address, name, now_ms()).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Removes an address, its delegates, and the delegations that name it as a delegate (the
    /// person has left). Returns whether it was in the directory table, and how many
    /// delegations went with it.
    pub async fn directory_remove(&self, address: &str) -> Result<(bool, u64)> {
        let mut tx = self.begin_write().await?;
        let removed = remove(&mut tx, address).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Every address, sorted, with its delegates.
    pub async fn directory_list(&self) -> Result<Vec<Entry>> {
        let rows = sqlx::query("SELECT address, name, added_at FROM directory ORDER BY address")
            .fetch_all(&self.pool)
            .await?;
        let mut delegates = self.delegations_all().await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            let address: String = r.try_get("address")?;
            entries.push(Entry {
                delegates: delegates.remove(&address).unwrap_or_default(),
                name: r.try_get("name")?,
                added_at: r.try_get("added_at")?,
                address,
            });
        }
        // Delegations of an address that is not (or no longer) in the directory table: it may
        // be known through LDAP.
        for (address, delegates) in delegates {
            entries.push(Entry {
                address,
                name: String::new(),
                delegates,
                added_at: 0,
            });
        }
        entries.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(entries)
    }

    /// Loads a parsed CSV file in one transaction: every line or none. Each address is added or
    /// updated (its name when the file has a `name` column; its delegates, replaced by the
    /// file's, when it has a `delegates` column). With `replace`, addresses not in the file are
    /// removed first, as by `directory_remove`, so the table becomes exactly the file.
    pub async fn directory_import(&self, file: &Parsed, replace: bool) -> Result<Imported> {
        let now = now_ms();
        let mut done = Imported::default();
        let mut tx = self.begin_write().await?;
        if replace {
            let keep: HashSet<&str> = file.lines.iter().map(|l| l.address.as_str()).collect();
            let mut gone: Vec<String> = sqlx::query_scalar("SELECT address FROM directory")
                .fetch_all(&mut **tx)
                .await?;
            let delegating: Vec<String> =
                sqlx::query_scalar("SELECT DISTINCT address FROM delegations")
                    .fetch_all(&mut **tx)
                    .await?;
            gone.extend(delegating);
            gone.sort();
            gone.dedup();
            for address in gone.iter().filter(|a| !keep.contains(a.as_str())) {
                let (in_table, _) = remove(&mut tx, address).await?;
                done.removed += usize::from(in_table);
            }
        }
        for line in &file.lines {
            let name = if file.has_names {
                Some(line.name.as_str())
            } else {
                None
            };
            if upsert(&mut tx, &line.address, name, now).await? {
                done.added += 1;
            } else {
                done.updated += 1;
            }
            if file.has_delegates {
                sqlx::query("DELETE FROM delegations WHERE address = $1")
                    .bind(&line.address)
                    .execute(&mut **tx)
                    .await?;
                for d in &line.delegates {
                    add_delegation(&mut tx, &line.address, d, now).await?;
                    done.delegations += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(done)
    }

    /// `delegate` receives a copy of what arrives for `address`. False when it already did.
    pub async fn delegation_add(&self, address: &str, delegate: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let added = add_delegation(&mut tx, address, delegate, now_ms()).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// False when there was no such delegation.
    pub async fn delegation_remove(&self, address: &str, delegate: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM delegations WHERE address = $1 AND delegate = $2")
            .bind(address)
            .bind(delegate)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `(address, delegate)` for each of `addresses` that has delegates, sorted.
    pub async fn delegations_of(&self, addresses: &[String]) -> Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        // A few hundred addresses per statement: a group of messages can name thousands.
        for chunk in addresses.chunks(500) {
            let sql = format!(
                "SELECT address, delegate FROM delegations WHERE address IN ({})",
                self.backend.marks(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in chunk {
                query = query.bind(a);
            }
            for r in query.fetch_all(&self.pool).await? {
                pairs.push((r.try_get("address")?, r.try_get("delegate")?));
            }
        }
        pairs.sort();
        pairs.dedup();
        Ok(pairs)
    }

    async fn delegations_all(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let rows =
            sqlx::query("SELECT address, delegate FROM delegations ORDER BY address, delegate")
                .fetch_all(&self.pool)
                .await?;
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in rows {
            map.entry(r.try_get("address")?)
                .or_default()
                .push(r.try_get("delegate")?);
        }
        Ok(map)
    }
}

/// True when the address was added, false when it was there (its name then set, if given).
async fn upsert(
    tx: &mut Transaction<'_, Any>,
    address: &str,
    name: Option<&str>,
    now: i64,
) -> Result<bool> {
    let existed: Option<String> =
        sqlx::query_scalar("SELECT address FROM directory WHERE address = $1")
            .bind(address)
            .fetch_optional(&mut **tx)
            .await?;
    if existed.is_some() {
        if let Some(name) = name {
            sqlx::query("UPDATE directory SET name = $1 WHERE address = $2")
                .bind(name)
                .bind(address)
                .execute(&mut **tx)
                .await?;
        }
        return Ok(false);
    }
    sqlx::query("INSERT INTO directory (address, name, added_at) VALUES ($1, $2, $3)")
        .bind(address)
        .bind(name.unwrap_or(""))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// Removes an address and every delegation from or to it: whether it was in the directory table,
/// and how many delegations went.
async fn remove(tx: &mut Transaction<'_, Any>, address: &str) -> Result<(bool, u64)> {
    let done = sqlx::query("DELETE FROM directory WHERE address = $1")
        .bind(address)
        .execute(&mut **tx)
        .await?;
    let delegations = sqlx::query("DELETE FROM delegations WHERE address = $1 OR delegate = $1")
        .bind(address)
        .execute(&mut **tx)
        .await?;
    Ok((done.rows_affected() > 0, delegations.rows_affected()))
}

async fn add_delegation(
    tx: &mut Transaction<'_, Any>,
    address: &str,
    delegate: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO delegations (address, delegate, added_at) VALUES ($1, $2, $3) \
         ON CONFLICT (address, delegate) DO NOTHING",
    )
    .bind(address)
    .bind(delegate)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}
