//! A fresh database per test: a SQLite file in the test's folder, or a new PostgreSQL database
//! (`CREATE DATABASE t_<uuid>`) on the server `DATABASE_URL` points at.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Whether PostgreSQL tests can run. Without `DATABASE_URL` they are skipped with a note, unless
/// `PASSERELLE_REQUIRE_POSTGRES=1` (set by `scripts/test`), where a missing server is a failure.
pub fn postgres_available() -> bool {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        return true;
    }
    assert!(
        std::env::var("PASSERELLE_REQUIRE_POSTGRES").is_err(),
        "PASSERELLE_REQUIRE_POSTGRES is set but DATABASE_URL is not"
    );
    eprintln!("DATABASE_URL is not set: PostgreSQL variant skipped (scripts/test runs it)");
    false
}

/// The store URL for a new, empty database.
pub async fn fresh(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("passerelle.db").display()),
        Backend::Postgres => {
            use sqlx::Connection;
            let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL");
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            format!("{base}/{name}")
        }
    }
}

/// Opens or closes a test's PostgreSQL database to connections; closing also ends the ones it
/// has, so the daemon sees its store go away (and come back).
pub async fn set_reachable(store_url: &str, reachable: bool) {
    use sqlx::Connection;
    let db = store_url.rsplit('/').next().unwrap();
    let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let run = |sql: String| sqlx::raw_sql(sqlx::AssertSqlSafe(sql));
    run(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {reachable}"))
        .execute(&mut conn)
        .await
        .unwrap();
    if !reachable {
        run(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();
}

/// Runs SQL on a test's store behind the daemon's back (to tamper with it, or to look).
/// Returns the rows affected.
pub async fn exec(store_url: &str, sql: &str) -> u64 {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(store_url).await.unwrap();
    let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    done.rows_affected()
}

/// The first column of every row of a query, as integers.
pub async fn ints(store_url: &str, sql: &str) -> Vec<i64> {
    column(store_url, sql).await
}

/// The first column of every row of a query, as text.
pub async fn strs(store_url: &str, sql: &str) -> Vec<String> {
    column(store_url, sql).await
}

async fn column<T>(store_url: &str, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(store_url).await.unwrap();
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows.iter().map(|r| r.get::<T, _>(0)).collect()
}

/// The recorder of node "n", for tests that write to a store directly.
pub fn recorder() -> passerelle::store::events::Recorder {
    passerelle::store::events::Recorder {
        node: "n".into(),
        config_hash: "h".into(),
    }
}
