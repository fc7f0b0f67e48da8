//! The raw PostgreSQL baseline: single-row `INSERT`s, each its own commit
//! (`synchronous_commit = on`), from 1 or 8 concurrent clients on their own
//! connections — what the server does without Annals, measured on the same server in
//! the same run as the `postgres` backend.

use crate::report::Measured;
use crate::BenchResult;

/// Inserts `events` rows in total from `clients` connections, each row one commit.
#[cfg(feature = "postgres")]
pub async fn insert_per_commit(clients: u64, events: u64, payload: &str) -> BenchResult<Measured> {
    use crate::report::Latencies;
    use sqlx::Connection;
    use std::time::Instant;
    let url = crate::backend::postgres_url();
    let table = format!("{}.insert_baseline", crate::backend::POSTGRES_SCHEMA);
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (id bigint PRIMARY KEY, stream text NOT NULL, payload bytea NOT NULL);",
        schema = crate::backend::POSTGRES_SCHEMA
    ))
    .execute(&mut conn)
    .await?;
    let mut workers = Vec::new();
    let connect = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .options([("synchronous_commit", "on")]);
    for _ in 0..clients {
        workers.push(sqlx::PgConnection::connect_with(&connect).await?);
    }
    let sql = format!("INSERT INTO {table} (id, stream, payload) VALUES ($1, $2, $3)");
    let started = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(c, mut worker)| {
            let sql = sql.clone();
            let payload = payload.as_bytes().to_vec();
            let share = events / clients + u64::from((c as u64) < events % clients);
            tokio::spawn(async move {
                let mut latencies = Latencies::with_capacity(share as usize);
                let stream = format!("client-{c}");
                for n in 0..share {
                    let id = (n * clients + c as u64) as i64;
                    let t = Instant::now();
                    sqlx::query(&sql)
                        .bind(id)
                        .bind(&stream)
                        .bind(&payload)
                        .execute(&mut worker)
                        .await?;
                    latencies.record(t.elapsed());
                }
                let _ = worker.close().await;
                BenchResult::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Latencies::with_capacity(events as usize);
    for t in tasks {
        latencies.merge(t.await??);
    }
    let elapsed = started.elapsed();
    sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(Measured {
        events,
        elapsed,
        latencies,
    })
}

/// Without the `postgres` feature there is no server to measure.
#[cfg(not(feature = "postgres"))]
pub async fn insert_per_commit(
    _clients: u64,
    _events: u64,
    _payload: &str,
) -> BenchResult<Measured> {
    Err("this annals-bench was built without the `postgres` feature".into())
}
