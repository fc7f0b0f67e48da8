//! The backends the benchmark can measure. Adding one is one enum variant and one match
//! arm in [`Backend::open`].

use std::path::Path;
use std::sync::Arc;

use annals_core::{EventStore, MemoryStore};
use clap::ValueEnum;

use crate::BenchResult;

/// Which store to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// `annals_core::MemoryStore`, the in-memory reference backend.
    Memory,
    /// `annals_embedded::EmbeddedStore`, the single-node on-disk backend (cargo feature
    /// `embedded`, on by default).
    Embedded,
    /// `annals_postgres::PostgresStore` (cargo feature `postgres`), on the server named
    /// by `ANNALS_BENCH_POSTGRES_URL` or `ANNALS_TEST_POSTGRES_URL`.
    Postgres,
}

impl Backend {
    /// The name printed in the `backend` field.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Embedded => "embedded",
            Backend::Postgres => "postgres",
        }
    }

    /// Opens a fresh, empty store keeping its files (if any) in `dir`, an empty directory.
    pub async fn open(self, dir: &Path) -> BenchResult<Arc<dyn EventStore>> {
        match self {
            Backend::Memory => Ok(Arc::new(MemoryStore::new())),
            Backend::Embedded => open_embedded(dir),
            Backend::Postgres => open_postgres().await,
        }
    }
}

#[cfg(feature = "embedded")]
fn open_embedded(dir: &Path) -> BenchResult<Arc<dyn EventStore>> {
    Ok(Arc::new(annals_embedded::EmbeddedStore::open(dir)?))
}

#[cfg(not(feature = "embedded"))]
fn open_embedded(_dir: &Path) -> BenchResult<Arc<dyn EventStore>> {
    Err("this annals-bench was built without the `embedded` feature".into())
}

/// The PostgreSQL server to measure: `ANNALS_BENCH_POSTGRES_URL`, else
/// `ANNALS_TEST_POSTGRES_URL`, else the local default.
#[cfg(feature = "postgres")]
pub fn postgres_url() -> String {
    std::env::var("ANNALS_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("ANNALS_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The schema the benchmark's stores live in; dropped before each workload, so a run
/// leaves at most the last workload's store behind.
#[cfg(feature = "postgres")]
pub const POSTGRES_SCHEMA: &str = "annals_bench";

#[cfg(feature = "postgres")]
async fn open_postgres() -> BenchResult<Arc<dyn EventStore>> {
    use sqlx::Connection;
    let url = postgres_url();
    eprintln!("annals-bench: PostgreSQL at {url}, schema {POSTGRES_SCHEMA}");
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {POSTGRES_SCHEMA} CASCADE"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let options = annals_postgres::PostgresOptions {
        schema: POSTGRES_SCHEMA.into(),
        ..annals_postgres::PostgresOptions::default()
    };
    let db = annals_postgres::PostgresDatabase::connect(&url, options).await?;
    Ok(Arc::new(db.open_store("bench").await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres() -> BenchResult<Arc<dyn EventStore>> {
    Err("this annals-bench was built without the `postgres` feature".into())
}
