//! `POST /v1/stores/{store}/events/batch`: several independent appends in one request.
//!
//! A client with many concurrent writers (an application server, say) sends their appends
//! together instead of one request each. Every append keeps its own atomicity, expectation
//! and result: the batch is not a transaction. The server hands them to the store at once,
//! so a backend with group commit makes them durable with one sync.
//!
//! Body: `{"appends": [<append body>, ...]}` (each exactly what `POST /events` takes).
//! Answer: `200 {"results": [{"status": 201, "body": <append answer>} | {"status": 4xx,
//! "body": <error body>}, ...]}` in request order.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json as JsonBody;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::registry::Registry;
use crate::routes::{body_bytes, count, ApiResult};
use crate::wire::{self, parse_body, AppendBody};

/// The most appends one batch may carry (API.md request limits).
pub(crate) const MAX_APPENDS_PER_BATCH: usize = 1024;

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    appends: Vec<&'a RawValue>,
}

/// One append's outcome: the status `POST /events` would have answered, and its body.
#[derive(Serialize)]
struct Outcome<'a> {
    status: u16,
    body: OutcomeBody<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutcomeBody<'a> {
    Appended(wire::AppendOut<'a>),
    Refused(serde_json::Value),
}

#[derive(Serialize)]
struct BatchOut<'a> {
    results: Vec<Outcome<'a>>,
}

pub(crate) async fn append_batch(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let echo = crate::routes::echo(query.as_deref())?;
    let body = body_bytes(body)?;
    let s = reg.get(&store).await?;
    let batch: BatchBody<'_> =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", e.to_string()))?;
    if batch.appends.len() > MAX_APPENDS_PER_BATCH {
        return Err(ApiError::invalid(
            "appends",
            format!(
                "at most {MAX_APPENDS_PER_BATCH} appends per batch, got {}",
                batch.appends.len()
            ),
        ));
    }
    // Each body is checked on its own: one bad append refuses only itself.
    let requests: Vec<_> = batch
        .appends
        .iter()
        .map(|raw| parse_body::<AppendBody>(raw.get().as_bytes())?.into_request())
        .collect();
    // All appends are submitted before any is awaited, so they meet in one group commit.
    let results = futures::future::join_all(requests.into_iter().map(|request| {
        let s = Arc::clone(&s);
        async move { s.append(request?).await.map_err(ApiError::from) }
    }))
    .await;
    let mut appended = 0;
    let mut events = 0;
    let outcomes = results
        .iter()
        .map(|result| match result {
            Ok(r) => {
                appended += 1;
                events += r.events.len() as u64;
                Outcome {
                    status: StatusCode::CREATED.as_u16(),
                    body: OutcomeBody::Appended(wire::AppendOut::new(r, echo)),
                }
            }
            Err(e) => Outcome {
                status: e.parts().0.as_u16(),
                body: OutcomeBody::Refused(e.body()),
            },
        })
        .collect();
    count(&reg.metrics.appends, appended);
    count(&reg.metrics.appended_events, events);
    Ok(JsonBody(BatchOut { results: outcomes }).into_response())
}
