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
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::registry::Registry;
use crate::routes::{body_bytes, count, ApiResult};
use crate::wire::query::{EchoQuery, StorePath};
use crate::wire::{self, parse_body, AppendBody};

/// The most appends one batch may carry (API.md request limits).
pub(crate) const MAX_APPENDS_PER_BATCH: usize = 1024;

/// The body of `POST /events/batch`.
#[derive(Deserialize, ToSchema)]
#[schema(as = AppendBatchRequest)]
struct BatchBody<'a> {
    /// The appends, each exactly what `POST /events` takes (at most 1024). Each is read
    /// on its own, so a malformed one refuses only itself.
    #[serde(borrow)]
    #[schema(value_type = Vec<AppendBody>, max_items = 1024)]
    appends: Vec<&'a RawValue>,
}

/// One append's outcome: the status `POST /events` would have answered, and its body.
#[derive(Serialize, ToSchema)]
#[schema(as = AppendOutcome)]
struct Outcome<'a> {
    /// 201, or the status of the refusal.
    #[schema(minimum = 100, maximum = 599)]
    status: u16,
    body: OutcomeBody<'a>,
}

/// The append answer (status 201) or the error body.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = AppendOutcomeBody)]
enum OutcomeBody<'a> {
    Appended(wire::AppendOut<'a>),
    Refused(ErrorBody),
}

/// The answer of `POST /events/batch`.
#[derive(Serialize, ToSchema)]
#[schema(as = AppendBatchAnswer)]
struct BatchOut<'a> {
    /// One outcome per append, in request order.
    results: Vec<Outcome<'a>>,
}

#[utoipa::path(
    post,
    path = "/v1/stores/{store}/events/batch",
    operation_id = "appendBatch",
    tag = "events",
    summary = "Several independent appends in one request; one result each.",
    params(StorePath, EchoQuery),
    request_body(content = BatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Each append's outcome, in request order: the batch is not a transaction.", body = BatchOut),
        (status = 400, description = "`invalid_request`: a malformed store name, parameter or body (not `{\"appends\": [...]}`), more than 1024 appends.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: the body is larger than `maxBodyBytes`.", body = ErrorBody),
    )
)]
pub(crate) async fn append_batch(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let echo = crate::routes::echo(query.as_deref())?;
    let body = body_bytes(body, reg.max_body_bytes)?;
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
                body: OutcomeBody::Refused(e.error_body()),
            },
        })
        .collect();
    count(&reg.metrics.appends, appended);
    count(&reg.metrics.appended_events, events);
    Ok(JsonBody(BatchOut { results: outcomes }).into_response())
}
