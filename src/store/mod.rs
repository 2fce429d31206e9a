//! The store: one small interface over two sqlx backends, SQLite (embedded, one node) and
//! PostgreSQL (several nodes). Queries are written once in the SQL both understand (`$1`
//! placeholders, `RETURNING`, integers for times); where they differ, `Backend` says which, and
//! statements of many parameters take theirs from [`Backend::marks`].
//!
//! Durability: a `250` is sent only after the transaction that holds the message commits.
//! SQLite runs in WAL mode with `synchronous=FULL` (queue leases and event seals apart, see
//! `connect`); PostgreSQL with `synchronous_commit=on`.

pub mod chain;
pub mod events;
pub mod report;
pub mod retention;

use crate::config::redact_url as redact;
use anyhow::{Context as _, Result};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    /// Where queue leases and event seals are written: on SQLite a connection that does not
    /// sync its commits (see `connect`); on PostgreSQL the same pool.
    pub(crate) leases: AnyPool,
    /// Where synced writes in turn go (`begin_write`): on SQLite one connection of their own,
    /// whose page cache stays warm from one commit to the next (SQLite empties a connection's
    /// cache when another has written since); on PostgreSQL the same pool.
    synced: AnyPool,
    pub(crate) backend: Backend,
    /// SQLite only: the task that commits concurrent acceptances together (`queue/group.rs`),
    /// started at the first one.
    pub(crate) group: std::sync::Arc<std::sync::OnceLock<crate::queue::group::Sender>>,
    /// SQLite only: this process's writers take turns here, first come first served. Left to
    /// SQLite, a writer that finds the database locked sleeps 1, 2, 5 … 100 ms between tries
    /// and can lose to newcomers again and again: that is what made p99 latency 10× p50.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Messages just committed, for the delivery that follows (`queue/recent.rs`).
    pub(crate) recent: std::sync::Arc<crate::queue::recent::Recent>,
    /// Recipients committed leased to this node, for its scheduler (`queue/handoff.rs`).
    pub(crate) handoff: std::sync::Arc<crate::queue::handoff::Handoff>,
}

/// A write transaction that holds this process's turn to write (SQLite) until it ends.
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    /// SQLite: the pool of one connection `tx` runs on, to close it if its commit fails.
    pool: Option<AnyPool>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<()> {
        let WriteTx { tx, pool, _turn } = self;
        let Err(e) = tx.commit().await else {
            return Ok(());
        };
        // A COMMIT that fails (a full disk) can end SQLite's transaction while sqlx still counts
        // it open: the connection's next transaction is then a savepoint, and after one more
        // failure a savepoint inside a transaction that never commits — mail acknowledged and
        // lost (tests/disk_full.rs). The connection is closed instead, and the pool opens a new
        // one. Its pool has one connection and the turn is still held: it is this one.
        if let Some(pool) = pool
            && let Ok(conn) = pool.acquire().await
        {
            let _ = conn.close().await;
        }
        Err(e.into())
    }

    /// Rolls back now, before anything else is written. A transaction merely dropped is rolled
    /// back by a task sqlx spawns as its connection goes back to the pool; on PostgreSQL it
    /// holds its chain's lock until then, and a write begun meanwhile on another connection
    /// finds it taken and writes its events unlinked (chain.rs).
    pub(crate) async fn rollback(self) -> Result<()> {
        let WriteTx { tx, .. } = self;
        Ok(tx.rollback().await?)
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::Transaction<'static, sqlx::Any>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Backend {
    /// `n` placeholders for parameters bound one after the other, comma-separated: `$first, …`
    /// on PostgreSQL, bare `?` on SQLite. sqlx asks SQLite for the name of every parameter it
    /// binds, and SQLite finds a numbered parameter's name (`$7`, `?7`) by a linear search, as it
    /// does when preparing one: a statement of 1,000 such parameters cost half a million steps
    /// twice over (the event sealer's batch took 4–5 ms). Bare `?` are numbered by position, so a
    /// statement built with these must use them throughout, each value bound once, in the order
    /// of the text.
    pub(crate) fn marks(self, first: usize, n: usize) -> String {
        let mut sql = String::with_capacity(n * 6);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            match self {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(first + i).to_string());
                }
            }
        }
        sql
    }

    /// `VALUES (…), (…)`: `rows` tuples of `width` placeholders from `first`, as [`Self::marks`].
    pub(crate) fn values(self, width: usize, rows: usize, first: usize) -> String {
        let mut sql = String::from("VALUES ");
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            sql.push_str(&self.marks(first + row * width, width));
            sql.push(')');
        }
        sql
    }
}

/// Unix time in milliseconds: how every time is kept in the store.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// Released migrations are never edited: a change is a new file.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "queue",
        include_str!("../../migrations/sqlite/0001_queue.sql"),
    ),
    (
        2,
        "warned",
        include_str!("../../migrations/sqlite/0002_warned.sql"),
    ),
    (
        3,
        "reputation",
        include_str!("../../migrations/sqlite/0003_reputation.sql"),
    ),
    (
        4,
        "settings",
        include_str!("../../migrations/sqlite/0004_settings.sql"),
    ),
    (
        5,
        "trace",
        include_str!("../../migrations/sqlite/0005_trace.sql"),
    ),
    (
        6,
        "leases",
        include_str!("../../migrations/sqlite/0006_leases.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "queue",
        include_str!("../../migrations/postgres/0001_queue.sql"),
    ),
    (
        2,
        "warned",
        include_str!("../../migrations/postgres/0002_warned.sql"),
    ),
    (
        3,
        "reputation",
        include_str!("../../migrations/postgres/0003_reputation.sql"),
    ),
    (
        4,
        "settings",
        include_str!("../../migrations/postgres/0004_settings.sql"),
    ),
    (
        5,
        "trace",
        include_str!("../../migrations/postgres/0005_trace.sql"),
    ),
    (
        6,
        "leases",
        include_str!("../../migrations/postgres/0006_leases.sql"),
    ),
    (
        7,
        "backlog",
        include_str!("../../migrations/postgres/0007_backlog.sql"),
    ),
];

/// Bytes of write-ahead log SQLite keeps on disk when it starts the log over; beyond, the file
/// is cut back (after a burst).
const WAL_KEPT: u64 = 64 << 20;

/// A pool on `url`; `synchronous` is SQLite's setting for its connections.
async fn open(url: &str, backend: Backend, max: u32, synchronous: &'static str) -> Result<AnyPool> {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        // A SQLite connection is a handle in this process and cannot go stale: pinging it at
        // every acquire (sqlx's default) only cost two thread hand-offs. A PostgreSQL one can
        // (a server restart), and is still pinged.
        .test_before_acquire(backend == Backend::Postgres)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // FULL: the WAL is synced at every commit, so a 250 survives power loss.
                // No automatic checkpoint: it would run inside whichever commit crossed 1,000
                // pages, copying the log into the database and syncing it while every waiting
                // client waits too. The daemon checkpoints every second beside the writers
                // (`checkpoint`); closing the last connection, as a command-line run does,
                // checkpoints as well.
                let setup = match backend {
                    Backend::Sqlite => format!(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; \
                         PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000; \
                         PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={WAL_KEPT};"
                    ),
                    Backend::Postgres => "SET synchronous_commit = on".into(),
                };
                sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .with_context(|| format!("connecting to the store {}", redact(url)))
}

impl Store {
    /// Connects to `sqlite://PATH` (created with its folder when missing) or `postgres://…`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            let (file, query) = path.split_once('?').unwrap_or((path, ""));
            let dir = std::path::Path::new(file).parent();
            if let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let url = if query.contains("mode=") {
                url.to_owned()
            } else if query.is_empty() {
                format!("{url}?mode=rwc")
            } else {
                format!("{url}&mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            (Backend::Postgres, url.to_owned())
        };
        let pool = open(&url, backend, max_connections, "FULL").await?;
        // Leases are taken and given back several times a second under load, and need no sync:
        // a claim lost in a crash leaves its recipients due, as they were; the next commit with
        // `synchronous=FULL` syncs the log with every frame before it. One connection, as the
        // writers take turns anyway.
        let (leases, synced) = match backend {
            Backend::Sqlite => (
                open(&url, backend, 1, "NORMAL").await?,
                open(&url, backend, 1, "FULL").await?,
            ),
            Backend::Postgres => (pool.clone(), pool.clone()),
        };
        Ok(Store {
            pool,
            leases,
            synced,
            backend,
            group: Default::default(),
            writer: Default::default(),
            recent: Default::default(),
            handoff: Default::default(),
        })
    }

    /// Waits for this process's turn to write (SQLite); PostgreSQL locks rows, not the database.
    pub(crate) async fn turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writer.clone().lock_owned().await),
            Backend::Postgres => None,
        }
    }

    /// Begins a transaction that writes, in turn.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        let turn = self.turn().await;
        Ok(WriteTx {
            tx: self.begin_on(&self.synced).await?,
            pool: (self.backend == Backend::Sqlite).then(|| self.synced.clone()),
            _turn: turn,
        })
    }

    /// Begins a transaction that writes, in turn, what a crash may lose because it is written
    /// again the same way afterwards (the events' seals): on SQLite on the leases' connection,
    /// which does not sync (see `connect`), so that it holds the writers' turn for no fsync.
    pub(crate) async fn begin_unsynced_write(&self) -> Result<WriteTx> {
        let turn = self.turn().await;
        Ok(WriteTx {
            tx: self.begin_on(&self.leases).await?,
            pool: (self.backend == Backend::Sqlite).then(|| self.leases.clone()),
            _turn: turn,
        })
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): what
    /// it reads first, such as the head of the events' chain it extends, cannot change under it
    /// (another process, a CLI command, may write between a plain BEGIN's first read and its
    /// first write, and that write would then fail).
    async fn begin_on(&self, pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        })
    }

    fn migrations(&self) -> &'static [(i64, &'static str, &'static str)] {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        }
    }

    /// Whether every migration this binary knows is applied. Read-only, so a daemon role
    /// without CREATE (deploy/postgres/roles.sql) can start on a store migrated by its owner,
    /// and an older binary can run beside a newer one during a rolling upgrade.
    pub async fn is_current(&self) -> bool {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(v) => v,
                Err(_) => return false,
            };
        self.migrations()
            .iter()
            .all(|(v, _, _)| applied.contains(v))
    }

    /// Applies the migrations that are not applied yet (nothing at all when none is missing).
    pub async fn migrate(&self) -> Result<()> {
        if self.is_current().await {
            return Ok(());
        }
        let list = self.migrations();
        let migrations: Vec<Migration> = list
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        let migrator = Migrator {
            migrations: Cow::Owned(migrations),
            ..Migrator::DEFAULT
        };
        migrator
            .run(&self.pool)
            .await
            .context("applying the store's migrations")?;
        Ok(())
    }

    /// A shared setting, made by `make` the first time any node asks (first writer wins).
    pub async fn setting(&self, name: &str, make: impl FnOnce() -> String) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(make())
        .execute(&self.pool)
        .await?;
        let value: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(value)
    }

    /// Recipients per status, for the queue-depth metric.
    pub async fn depth(&self) -> Result<Vec<(String, i64)>> {
        use sqlx::Row;
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM recipients GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// When the oldest recipient still waiting was queued (unix ms), for the queue-age metric.
    pub async fn oldest_pending(&self) -> Result<Option<i64>> {
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(m.received_at) FROM recipients r JOIN messages m ON m.id = r.message_id \
             WHERE r.status IN ('queued', 'deferred')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(oldest)
    }

    /// SQLite: copies what the write-ahead log holds into the database, so that the log can start
    /// over. PostgreSQL: nothing to do.
    pub async fn checkpoint(&self) -> Result<()> {
        // SQLite's own threshold for its automatic checkpoints: about 4 MiB.
        self.checkpoint_past(1000).await
    }

    /// A passive checkpoint, which does not block the writers; and when the log holds more than
    /// `frames` pages, a second one with this process's writers held back, so that the log is
    /// wholly copied when the next write begins and SQLite starts it over from the top. Under
    /// steady load a commit always lands during the first, and without the second the log grew
    /// without end (170 MB in a minute of benchmark, reads slowing with it). The second holds the
    /// writers for a few milliseconds (an fsync of the database), but a log started over each
    /// second made the benchmark faster, not slower (bench/README.md); a short log starts over
    /// at the first quiet moment and does not need it.
    pub(crate) async fn checkpoint_past(&self, frames: i64) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        use sqlx::Row;
        let passive = || sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&self.pool);
        let log: i64 = passive().await?.try_get(1)?;
        if log > frames {
            let _turn = self.turn().await;
            passive().await?;
        }
        Ok(())
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        // The leases' and the writes' pools first: SQLite checkpoints when the last connection
        // closes.
        self.leases.close().await;
        self.synced.close().await;
        self.pool.close().await;
    }
}

/// A migrated SQLite store in a folder of its own, and a recorder for node "n", for unit tests.
#[cfg(test)]
pub(crate) async fn scratch() -> (tempfile::TempDir, Store, events::Recorder) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = Store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let rec = events::Recorder {
        node: "n".into(),
        config_hash: "h".into(),
    };
    (dir, store, rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_run_on_across_rows() {
        let pg = Backend::Postgres;
        assert_eq!(pg.values(2, 2, 1), "VALUES ($1, $2), ($3, $4)");
        assert_eq!(pg.values(1, 3, 2), "VALUES ($2), ($3), ($4)");
        assert_eq!(Backend::Sqlite.values(2, 2, 1), "VALUES (?, ?), (?, ?)");
        assert_eq!(pg.marks(3, 2), "$3, $4");
        assert_eq!(Backend::Sqlite.marks(3, 2), "?, ?");
    }

    /// Messages and outcomes are synced at every commit; leases, which a crash may lose, are not.
    #[tokio::test]
    async fn only_the_leases_connection_skips_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let synchronous = |pool: AnyPool| async move {
            let row = sqlx::query("PRAGMA synchronous")
                .fetch_one(&pool)
                .await
                .unwrap();
            sqlx::Row::try_get::<i64, _>(&row, 0).unwrap()
        };
        // 2 is FULL, 1 NORMAL.
        assert_eq!(synchronous(store.pool.clone()).await, 2);
        assert_eq!(synchronous(store.synced.clone()).await, 2);
        assert_eq!(synchronous(store.leases.clone()).await, 1);
        store.close().await;
    }

    /// A store of `connections` with one table, `t (b BLOB)`, to write blobs into.
    async fn blobs(connections: u32) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let store = Store::connect(&format!("sqlite://{}", db.display()), connections)
            .await
            .unwrap();
        sqlx::raw_sql("CREATE TABLE t (b BLOB)")
            .execute(&store.pool)
            .await
            .unwrap();
        (dir, store)
    }

    /// Commits do not checkpoint the log themselves; `checkpoint` does, and the log's space is
    /// then used again instead of growing.
    #[tokio::test]
    async fn the_log_is_checkpointed_by_the_upkeep_not_by_commits() {
        let (dir, store) = blobs(2).await;
        let wal = dir.path().join("s.db-wal");
        let write = |n: usize| {
            let pool = store.pool.clone();
            async move {
                for _ in 0..n {
                    // Each commit appends about 25 pages: 1,000 pages (the automatic
                    // checkpoint's threshold) are crossed after some 40 commits.
                    sqlx::query("INSERT INTO t (b) VALUES ($1)")
                        .bind(vec![7u8; 100_000])
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }
        };
        write(60).await;
        let grown = std::fs::metadata(&wal).unwrap().len();
        assert!(
            grown > 5_000_000,
            "no commit checkpointed: the log holds it all ({grown})"
        );
        store.checkpoint().await.unwrap();
        write(10).await;
        let after = std::fs::metadata(&wal).unwrap().len();
        assert_eq!(
            after, grown,
            "after the checkpoint, the log starts again from its beginning"
        );
    }

    /// With writes never pausing, a checkpoint used to finish with commits already past it,
    /// and the log was never started over: it held everything written since the daemon began.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_steady_writes_the_log_still_starts_over() {
        let (dir, store) = blobs(4).await;
        // The writer commits back to back and counts its commits; a checkpoint runs after
        // every fifth, while the writer goes on.
        let (commits, mut seen) = tokio::sync::watch::channel(0u64);
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 1..=150u64 {
                    let mut tx = store.begin_write().await.unwrap();
                    sqlx::query("INSERT INTO t (b) VALUES ($1)")
                        .bind(vec![7u8; 20_000])
                        .execute(&mut **tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    commits.send_replace(n);
                }
            })
        };
        for round in 1..=30u64 {
            seen.wait_for(|n| *n >= round * 5).await.unwrap();
            store.checkpoint_past(64).await.unwrap();
        }
        writer.await.unwrap();
        let written = 150 * 20_000u64;
        let wal = std::fs::metadata(dir.path().join("s.db-wal"))
            .unwrap()
            .len();
        assert!(
            wal < written / 2,
            "the log holds {wal} bytes of the {written} written: it was not started over"
        );
    }
}
