//! The queue's claim against the size of the queue (issue #8): claiming due recipients must cost
//! the same with 1,000,000 deferred recipients waiting in the store as with 1,000.
//!
//! For each backend (SQLite always; PostgreSQL when `DATABASE_URL` is set, as `pg_start` in
//! `scripts/postgres.sh` does) one store per size is migrated with the library's own code, then
//! filled with bulk SQL: `size` deferred recipients due in the next five days, plus the same 500
//! recipients due now at every size. The sizes are then measured in alternation, round after
//! round, so that other load on the machine falls on both alike:
//!
//! - `claim`: one batch of 100 due recipients through `Store::claim` (what the scheduler does
//!   on each wake), commit included;
//! - `claim query`: the claim's SELECT alone, read-only: its cost without the commit's fsync;
//! - `empty claim`: the claim that finds nothing more due (the 500 are leased);
//! - `next_due`: `Store::next_due`, the scheduler's "how long may I sleep" query, run whenever
//!   a claim comes back empty;
//! - `backlog claim`: a batch of 100 once every recipient of the store is due (after an outage).
//!
//! Run: `cargo bench --bench claim`. Under `cargo test --all-targets` (no `--bench` argument)
//! it only makes one quick SQLite pass at 1,000, so that the test suite stays fast.

use anyhow::{Context as _, Result};
use passerelle::store::{Backend, Store, now_ms};
use sqlx::{AnyPool, Row};
use std::time::{Duration, Instant};

/// Recipients due now, at every size.
const DUE: i64 = 500;
/// Recipients per claim: the default `queue.batch`.
const BATCH: i64 = 100;
const LEASE_MS: i64 = 300_000;
const OWNER: &str = "bench";

/// One store of a given size and what was measured on it.
struct Queue {
    backend: Backend,
    size: i64,
    store: Store,
    pool: AnyPool,
    claim: Vec<Duration>,
    select: Vec<Duration>,
    empty: Vec<Duration>,
    next_due: Vec<Duration>,
    backlog: Vec<Duration>,
}

fn main() -> Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let (sizes, rounds): (&[i64], usize) = if full {
        (&[1_000, 1_000_000], 30)
    } else {
        (&[1_000], 2)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let mut backends = vec![Backend::Sqlite];
        match std::env::var("DATABASE_URL") {
            Ok(_) if full => backends.push(Backend::Postgres),
            Ok(_) => {}
            Err(_) => println!("claim: DATABASE_URL not set: PostgreSQL skipped"),
        }
        println!(
            "claim: {DUE} due recipients, batches of {BATCH}, {rounds} rounds; \
             times are medians (p90)"
        );
        row(
            "backend",
            "deferred",
            [
                "claim",
                "claim query",
                "empty claim",
                "next_due",
                "backlog claim",
            ],
        );
        for backend in backends {
            let mut queues = Vec::new();
            for &size in sizes {
                queues.push(Queue::new(backend, size, dir.path()).await?);
            }
            let plans = run(&mut queues, rounds, full).await?;
            for q in &queues {
                let cells = [&q.claim, &q.select, &q.empty, &q.next_due, &q.backlog];
                let cells = cells.map(|v| show(v));
                row(
                    name(backend),
                    &q.size.to_string(),
                    cells.each_ref().map(|c| c.as_str()),
                );
            }
            if let [small, large] = &queues[..] {
                let r = |a: &[Duration], b: &[Duration]| {
                    median(b).as_secs_f64() / median(a).as_secs_f64()
                };
                println!(
                    "{:<9} ratio {}/{}: claim ×{:.2}, claim query ×{:.2}, empty claim ×{:.2}, \
                     next_due ×{:.1}, backlog claim ×{:.1}",
                    name(backend),
                    large.size,
                    small.size,
                    r(&small.claim, &large.claim),
                    r(&small.select, &large.select),
                    r(&small.empty, &large.empty),
                    r(&small.next_due, &large.next_due),
                    r(&small.backlog, &large.backlog)
                );
            }
            for line in plans {
                println!("{line}");
            }
            for q in queues {
                q.close().await?;
            }
        }
        Ok(())
    })
}

fn row(a: &str, b: &str, c: [&str; 5]) {
    println!(
        "{a:<9} {b:>9} {:>18} {:>18} {:>18} {:>20} {:>18}",
        c[0], c[1], c[2], c[3], c[4]
    );
}

/// Measures every queue in turn, round after round; returns the largest one's query plans
/// when `explain`.
async fn run(queues: &mut [Queue], rounds: usize, explain: bool) -> Result<Vec<String>> {
    for _ in 0..rounds {
        for q in queues.iter_mut() {
            q.claim_round().await?;
        }
    }
    for _ in 0..rounds {
        for q in queues.iter_mut() {
            q.select().await?;
        }
    }
    let mut plans = Vec::new();
    if explain && let Some(q) = queues.last() {
        let claim = claim_select(now_ms(), lock(q.backend));
        plans.extend(q.plan("claim, 500 due", &claim).await?);
        plans.extend(
            q.plan("next_due, leases", next_due_leased(q.backend))
                .await?,
        );
    }
    for q in queues.iter_mut() {
        q.all_due().await?;
    }
    if explain && let Some(q) = queues.last() {
        let claim = claim_select(now_ms(), lock(q.backend));
        plans.extend(q.plan("claim, every recipient due", &claim).await?);
    }
    for _ in 0..rounds.min(10) {
        for q in queues.iter_mut() {
            q.backlog_claim().await?;
        }
    }
    Ok(plans)
}

impl Queue {
    /// A new store, migrated and filled.
    async fn new(backend: Backend, size: i64, dir: &std::path::Path) -> Result<Queue> {
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/claim-{size}.db", dir.display()),
            Backend::Postgres => {
                let db = pg_db(size);
                admin(&format!("DROP DATABASE IF EXISTS {db}")).await?;
                admin(&format!("CREATE DATABASE {db}")).await?;
                pg_url(&db)?
            }
        };
        let store = Store::connect(&url, 5).await?;
        store.migrate().await?;
        let pool = AnyPool::connect(&url).await?;
        let started = Instant::now();
        fill(backend, &pool, size).await?;
        eprintln!(
            "claim: {} filled with {size} deferred + {DUE} due in {:.1} s",
            name(backend),
            started.elapsed().as_secs_f64()
        );
        Ok(Queue {
            backend,
            size,
            store,
            pool,
            claim: Vec::new(),
            select: Vec::new(),
            empty: Vec::new(),
            next_due: Vec::new(),
            backlog: Vec::new(),
        })
    }

    /// Claims every due recipient in batches, then asks `next_due`, then gives the leases back.
    async fn claim_round(&mut self) -> Result<()> {
        let mut claimed = 0;
        loop {
            let t = Instant::now();
            let batch = self
                .store
                .claim(OWNER, now_ms(), LEASE_MS, BATCH, &[])
                .await?;
            let took = t.elapsed();
            if batch.is_empty() {
                self.empty.push(took);
                break;
            }
            self.claim.push(took);
            claimed += batch.len() as i64;
        }
        anyhow::ensure!(claimed == DUE, "claimed {claimed} of {DUE} due recipients");
        let t = Instant::now();
        self.store.next_due().await?;
        self.next_due.push(t.elapsed());
        self.store.release(OWNER).await?;
        Ok(())
    }

    /// The claim's query alone, read-only.
    async fn select(&mut self) -> Result<()> {
        let sql = claim_select(now_ms(), "");
        let t = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        self.select.push(t.elapsed());
        Ok(())
    }

    /// Makes every recipient due at once: the backlog after a long outage of the next hops.
    async fn all_due(&mut self) -> Result<()> {
        let sql = format!(
            "UPDATE recipients SET next_attempt_at = {} - 2000 - id WHERE status = 'deferred'",
            now_ms()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await?;
        settle(self.backend, &self.pool).await
    }

    async fn backlog_claim(&mut self) -> Result<()> {
        let t = Instant::now();
        let batch = self
            .store
            .claim(OWNER, now_ms(), LEASE_MS, BATCH, &[])
            .await?;
        self.backlog.push(t.elapsed());
        anyhow::ensure!(batch.len() as i64 == BATCH, "short backlog batch");
        self.store.release(OWNER).await?;
        Ok(())
    }

    /// The plan of `sql` as the store holds it now, one line per row (PostgreSQL: with
    /// timings).
    async fn plan(&self, what: &str, sql: &str) -> Result<Vec<String>> {
        let prefix = match self.backend {
            Backend::Sqlite => "EXPLAIN QUERY PLAN",
            Backend::Postgres => "EXPLAIN (ANALYZE, BUFFERS)",
        };
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{prefix} {sql}")))
            .fetch_all(&self.pool)
            .await?;
        let mut lines = vec![format!("  {} plan, {what}:", name(self.backend))];
        for row in rows {
            let line: String = match self.backend {
                Backend::Sqlite => row.try_get("detail")?,
                Backend::Postgres => row.try_get(0)?,
            };
            lines.push(format!("    {line}"));
        }
        Ok(lines)
    }

    async fn close(self) -> Result<()> {
        self.pool.close().await;
        self.store.close().await;
        if self.backend == Backend::Postgres {
            admin(&format!("DROP DATABASE IF EXISTS {}", pg_db(self.size))).await?;
        }
        Ok(())
    }
}

/// Runs `sql` on the server's `postgres` database.
async fn admin(sql: &str) -> Result<()> {
    let pool = AnyPool::connect(&pg_url("postgres")?).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

fn name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

fn pg_db(size: i64) -> String {
    format!("claim_bench_{size}_{}", std::process::id())
}

/// `DATABASE_URL` with its database replaced by `db`.
fn pg_url(db: &str) -> Result<String> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let (server, _) = base
        .rsplit_once('/')
        .context("DATABASE_URL has no database")?;
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(format!("{server}/{db}{query}"))
}

/// Bulk rows in one statement each: a message per 1,000 recipients, `size` deferred recipients
/// spread over 50 domains and the next five days, and `DUE` queued recipients due now.
async fn fill(backend: Backend, pool: &AnyPool, size: i64) -> Result<()> {
    let now = now_ms();
    let series = |n: i64| match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE s(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM s WHERE x + 1 < {n})"
        ),
        Backend::Postgres => {
            format!("WITH s(x) AS (SELECT generate_series(0::bigint, {n} - 1))")
        }
    };
    let messages = size / 1000 + 1;
    let statements = [
        format!(
            "{} INSERT INTO messages (id, direction, sender, size, body, received_at, node, \
             config_hash) SELECT 'm' || x, 'inbound', 'sender@bench.test', 1, NULL, {now}, \
             'bench', 'bench' FROM s",
            series(messages)
        ),
        format!(
            "{} INSERT INTO recipients (message_id, address, domain, status, attempts, \
             next_attempt_at, last_reply, updated_at) SELECT 'm' || (x / 1000), \
             'user' || x || '@d' || (x % 50) || '.example', 'd' || (x % 50) || '.example', \
             'deferred', 3, {now} + 3600000 + (x * 7919) % 432000000, '451 4.3.0 try later', \
             {now} FROM s",
            series(size)
        ),
        format!(
            "{} INSERT INTO recipients (message_id, address, domain, status, attempts, \
             next_attempt_at, updated_at) SELECT 'm' || {last}, 'due' || x || '@d' || (x % 50) \
             || '.example', 'd' || (x % 50) || '.example', 'queued', 0, {now} - 1000 - x, {now} \
             FROM s",
            series(DUE),
            last = messages - 1
        ),
    ];
    let mut tx = pool.begin().await?;
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    settle(backend, pool).await
}

/// Writes a bulk change out before measuring: a load still being flushed by the kernel slows
/// every fsync of the claims that follow, whatever the queries cost. On PostgreSQL, ANALYZE
/// does what autovacuum does soon after such a change.
async fn settle(backend: Backend, pool: &AnyPool) -> Result<()> {
    let sql = match backend {
        Backend::Sqlite => "PRAGMA wal_checkpoint(TRUNCATE)",
        Backend::Postgres => "ANALYZE; CHECKPOINT",
    };
    sqlx::raw_sql(sql).execute(pool).await?;
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

// Copies of the SQL in `Store::claim` and `Store::next_due` (src/queue/store.rs), with literals,
// for the plans and the read-only timing.

fn claim_select(now: i64, lock: &str) -> String {
    format!(
        "SELECT id FROM recipients WHERE status IN ('queued', 'deferred') \
         AND next_attempt_at <= {now} AND (lease_until IS NULL OR lease_until < {now}) \
         ORDER BY next_attempt_at, id LIMIT {BATCH} {lock}"
    )
}

fn lock(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "",
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
    }
}

/// The part of `next_due` that could grow with the queue: the earliest lease to run out (its
/// two other reads take the first row of an index).
fn next_due_leased(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "SELECT MIN(CASE WHEN lease_until > next_attempt_at THEN lease_until \
             ELSE next_attempt_at END) AS due FROM recipients INDEXED BY recipients_leased \
             WHERE lease_until IS NOT NULL AND status IN ('queued', 'deferred')"
        }
        Backend::Postgres => {
            "SELECT MIN(CASE WHEN lease_until > next_attempt_at THEN lease_until \
             ELSE next_attempt_at END) AS due FROM recipients \
             WHERE lease_until IS NOT NULL AND status IN ('queued', 'deferred')"
        }
    }
}

fn median(v: &[Duration]) -> Duration {
    percentile(v, 50.0)
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn show(v: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("{:.2} ms ({:.2})", ms(median(v)), ms(percentile(v, 90.0)))
}
