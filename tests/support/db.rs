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
