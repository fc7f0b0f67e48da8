//! `GET /v1/openapi.json`: the OpenAPI 3.1 document, built from the table of operations
//! below (a test checks every operation in it against the routes the server answers).

use serde_json::{json, Map, Value};

/// One operation of the API.
pub(crate) struct Operation {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    ok: u16,
}

const fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    ok: u16,
) -> Operation {
    Operation {
        method,
        path,
        id,
        summary,
        ok,
    }
}

/// Every operation the server answers.
pub(crate) const OPERATIONS: &[Operation] = &[
    op("get", "/healthz", "health", "Liveness check: `ok`.", 200),
    op(
        "get",
        "/metrics",
        "metrics",
        "Prometheus text metrics.",
        200,
    ),
    op("get", "/v1/openapi.json", "openapi", "This document.", 200),
    op(
        "put",
        "/v1/stores/{store}",
        "createStore",
        "Create a store.",
        201,
    ),
    op(
        "get",
        "/v1/stores/{store}",
        "describeStore",
        "Counts, head position, freeze flag.",
        200,
    ),
    op(
        "delete",
        "/v1/stores/{store}",
        "dropStore",
        "Delete a store and all its data.",
        204,
    ),
    op(
        "post",
        "/v1/stores/{store}/freeze",
        "freeze",
        "Refuse writes.",
        204,
    ),
    op(
        "post",
        "/v1/stores/{store}/unfreeze",
        "unfreeze",
        "Accept writes again.",
        204,
    ),
    op(
        "post",
        "/v1/stores/{store}/events",
        "append",
        "Append events atomically.",
        201,
    ),
    op(
        "post",
        "/v1/stores/{store}/events/batch",
        "appendBatch",
        "Several independent appends in one request; one result each.",
        200,
    ),
    op(
        "get",
        "/v1/stores/{store}/events",
        "readEvents",
        "Read events by position, filtered.",
        200,
    ),
    op(
        "get",
        "/v1/stores/{store}/events/export",
        "exportEvents",
        "Stored events as NDJSON.",
        200,
    ),
    op(
        "post",
        "/v1/stores/{store}/events/import",
        "importEvents",
        "Import NDJSON events, keeping ids, versions, timestamps (allowed while frozen).",
        200,
    ),
    op(
        "delete",
        "/v1/stores/{store}/events",
        "clearEvents",
        "Delete every event, stream and stream snapshot; positions restart at 1.",
        204,
    ),
    op(
        "post",
        "/v1/stores/{store}/secrets/import",
        "importSecrets",
        "Import NDJSON secrets, keeping idx and tombstones (allowed while frozen).",
        200,
    ),
    op(
        "delete",
        "/v1/stores/{store}/secrets",
        "clearSecrets",
        "Delete every secret; idx restarts at 0.",
        204,
    ),
    op(
        "post",
        "/v1/stores/{store}/events/{id}/dispatched",
        "markDispatched",
        "Mark an event dispatched.",
        204,
    ),
    op(
        "post",
        "/v1/stores/{store}/events/dispatched",
        "markDispatchedAt",
        "Mark the events at these positions dispatched, all or nothing (extension); 404 \
         `event_not_found` naming a position that holds no event.",
        204,
    ),
    op(
        "get",
        "/v1/stores/{store}/streams",
        "listStreams",
        "List streams by first event.",
        200,
    ),
    op(
        "get",
        "/v1/stores/{store}/streams/info",
        "streamInfo",
        "One stream's version and positions (extension).",
        200,
    ),
    op(
        "get",
        "/v1/stores/{store}/streams/events",
        "readStream",
        "One stream's events by version (extension).",
        200,
    ),
    op(
        "post",
        "/v1/stores/{store}/snapshots",
        "saveStreamSnapshot",
        "Save a stream snapshot.",
        201,
    ),
    op(
        "get",
        "/v1/stores/{store}/snapshots",
        "listStreamSnapshots",
        "Every snapshot of one stream, oldest save first: `{\"snapshots\": [...]}` \
         (extension).",
        200,
    ),
    op(
        "delete",
        "/v1/stores/{store}/snapshots",
        "pruneStreamSnapshots",
        "Keep the newest N snapshots of a stream.",
        200,
    ),
    op(
        "get",
        "/v1/stores/{store}/snapshots/latest",
        "latestStreamSnapshot",
        "The newest snapshot at or below a version.",
        200,
    ),
    op(
        "get",
        "/v1/stores/{store}/snapshot-keys",
        "listSnapshots",
        "Keyed snapshots in bytewise key order, paged with startAfter and limit: \
         `{\"snapshots\": [{\"key\", \"content\", \"timestamp\"}], \"nextStartAfter\"}` \
         (extension).",
        200,
    ),
    op(
        "post",
        "/v1/stores/{store}/snapshot-keys/import",
        "importSnapshots",
        "Store keyed snapshots keeping their timestamps, replacing same keys, all or \
         nothing; allowed while frozen: `{\"imported\": n}` (extension).",
        200,
    ),
    op(
        "put",
        "/v1/stores/{store}/snapshot-keys/{key}",
        "saveSnapshot",
        "Save a keyed snapshot.",
        204,
    ),
    op(
        "get",
        "/v1/stores/{store}/snapshot-keys/{key}",
        "loadSnapshot",
        "Load a keyed snapshot.",
        200,
    ),
    op(
        "delete",
        "/v1/stores/{store}/snapshot-keys/{key}",
        "dropSnapshot",
        "Delete a keyed snapshot.",
        204,
    ),
    op(
        "get",
        "/v1/stores/{store}/secrets",
        "listSecrets",
        "Secrets by index.",
        200,
    ),
    op(
        "put",
        "/v1/stores/{store}/secrets/{id}",
        "setSecret",
        "Store a secret under a new id; with `events`, appended in the same commit \
         (the answer then also carries `commitId`, `events`, `headPosition`).",
        201,
    ),
    op(
        "get",
        "/v1/stores/{store}/secrets/{id}",
        "getSecret",
        "Read a secret.",
        200,
    ),
    op(
        "delete",
        "/v1/stores/{store}/secrets/{id}",
        "deleteSecret",
        "Erase a secret for good (204); with `events` in the body, appended in the same \
         commit, the answer is 200 with the append answer.",
        204,
    ),
    op(
        "post",
        "/v1/stores/{store}/imports",
        "beginIncrementalImport",
        "Open an incremental import (`201 {\"importId\"}`); staged events live in the \
         server's memory.",
        201,
    ),
    op(
        "get",
        "/v1/stores/{store}/imports",
        "listIncrementalImports",
        "The open incremental imports: `{\"imports\": [{\"importId\", \"stagedCount\"}]}`.",
        200,
    ),
    op(
        "delete",
        "/v1/stores/{store}/imports",
        "rollbackIncrementalImports",
        "Roll back every open incremental import of the store.",
        204,
    ),
    op(
        "post",
        "/v1/stores/{store}/imports/{importId}/events",
        "pushIncrementalImport",
        "Stage events (no versions; a missing timestamp is the staging time).",
        204,
    ),
    op(
        "post",
        "/v1/stores/{store}/imports/{importId}/commit",
        "commitIncrementalImport",
        "Append the staged events not stored yet after the newest event, ordered by \
         (timestamp, staging order), atomically; 409 `import_conflict` when one is older \
         than the newest stored event. Closes the import, also on error.",
        200,
    ),
    op(
        "delete",
        "/v1/stores/{store}/imports/{importId}",
        "rollbackIncrementalImport",
        "Roll back (close) one incremental import.",
        204,
    ),
    op(
        "get",
        "/v1/stores/{store}/subscribe",
        "subscribe",
        "Catch-up then live events as Server-Sent Events (`event: event`); a subscriber \
         more than the server's --max-subscriber-lag events behind gets `event: lagged` \
         and the stream ends, to be resumed with Last-Event-ID.",
        200,
    ),
];

/// The path parameters of a templated path.
fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

/// A query parameter: name, JSON schema type, and whether it may repeat.
type Query = (&'static str, &'static str, bool);

/// The filters `GET /events` and `/subscribe` share.
const EVENT_FILTER: &[Query] = &[
    ("aggregateId", "string", true),
    ("aggregate", "string", false),
    ("context", "string", false),
    ("type", "string", true),
    ("minVersion", "integer", false),
    ("maxVersion", "integer", false),
    ("fromTimestamp", "string", false),
    ("toTimestamp", "string", false),
    ("dispatched", "boolean", false),
];

/// The parameters naming one stream.
const STREAM: &[Query] = &[
    ("aggregateId", "string", false),
    ("aggregate", "string", false),
    ("context", "string", false),
];

/// The query parameters of an operation (beyond the shared ones it lists).
fn query_parameters(id: &str) -> Vec<Query> {
    let mut q: Vec<Query> = Vec::new();
    match id {
        "readEvents" => {
            q.extend_from_slice(EVENT_FILTER);
            q.extend_from_slice(&[
                ("afterPosition", "integer", false),
                ("cursor", "string", false),
                ("reverse", "boolean", false),
                ("skip", "integer", false),
                ("limit", "integer", false),
            ]);
        }
        "subscribe" => {
            q.extend_from_slice(EVENT_FILTER);
            q.push(("afterPosition", "integer", false));
        }
        // `echo=false`: each event answered with what the store decided only.
        "append" | "appendBatch" => q.push(("echo", "boolean", false)),
        "exportEvents" => q.extend_from_slice(&[
            ("afterPosition", "integer", false),
            ("limit", "integer", false),
            ("maintenanceMode", "string", false),
        ]),
        "listStreamSnapshots" => q.extend_from_slice(STREAM),
        "listSnapshots" => {
            q.extend_from_slice(&[("startAfter", "string", false), ("limit", "integer", false)])
        }
        "importEvents" => q.extend_from_slice(&[
            ("onConflict", "string", false),
            ("batchSize", "integer", false),
            ("expectedHead", "integer", false),
            ("maintenanceMode", "string", false),
        ]),
        "importSecrets" => q.extend_from_slice(&[
            ("onConflict", "string", false),
            ("maintenanceMode", "string", false),
        ]),
        "listStreams" => q.extend_from_slice(&[
            ("aggregate", "string", false),
            ("context", "string", false),
            ("createdAfter", "string", false),
            ("createdBefore", "string", false),
            ("reverse", "boolean", false),
            ("limit", "integer", false),
            ("startAfter", "string", false),
            ("pageToken", "string", false),
        ]),
        "streamInfo" => q.extend_from_slice(STREAM),
        "readStream" => {
            q.extend_from_slice(STREAM);
            q.extend_from_slice(&[
                ("fromVersion", "integer", false),
                ("toVersion", "integer", false),
                ("reverse", "boolean", false),
                ("limit", "integer", false),
            ]);
        }
        "latestStreamSnapshot" => {
            q.extend_from_slice(STREAM);
            q.push(("maxStreamVersion", "integer", false));
        }
        "pruneStreamSnapshots" => {
            q.extend_from_slice(STREAM);
            q.push(("keep", "integer", false));
        }
        "listSecrets" => q.extend_from_slice(&[
            ("fromIdx", "integer", false),
            ("skip", "integer", false),
            ("limit", "integer", false),
            ("id", "string", true),
            ("includeDeleted", "boolean", false),
        ]),
        _ => {}
    }
    q
}

fn query_parameter((name, kind, repeats): Query) -> Value {
    let schema = if repeats {
        json!({"type": "array", "items": {"type": kind}})
    } else {
        json!({"type": kind})
    };
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

/// One proposed event, as `POST /events` takes it.
fn event_schema() -> Value {
    json!({
        "type": "object",
        "required": ["aggregateId"],
        "properties": {
            "id": {"type": "string"},
            "aggregateId": {"type": "string"},
            "aggregate": {"type": ["string", "null"]},
            "context": {"type": ["string", "null"]},
            "version": {"type": "integer", "minimum": 1},
            "type": {"type": "string"},
            "timestamp": {"type": "string"},
            "payload": {},
            "metadata": {"type": "object"}
        }
    })
}

fn expected_version_schema() -> Value {
    json!({"oneOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "enum": ["any", "exists", "noStream"]}
    ]})
}

/// The `secret` extension of an append: set (`secret`) or delete (`delete: true`) a
/// secret in the same commit.
fn secret_change_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string"},
            "secret": {"type": "string"},
            "delete": {"type": "boolean"}
        }
    })
}

fn append_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "commitId": {"type": "string"},
            "expectedVersion": expected_version_schema(),
            "overwrite": {"type": "boolean"},
            "events": {"type": "array", "items": event_schema()},
            "secret": secret_change_schema()
        }
    })
}

/// The request body of an operation, when it takes one.
fn request_body(id: &str) -> Option<Value> {
    let json_body = |schema: Value| json!({"required": true, "content": {"application/json": {"schema": schema}}});
    let ndjson = || json!({"required": true, "content": {"application/x-ndjson": {"schema": {"type": "string"}}}});
    Some(match id {
        "append" => json_body(append_schema()),
        "appendBatch" => json_body(json!({
            "type": "object",
            "required": ["appends"],
            "properties": {"appends": {"type": "array", "items": append_schema()}}
        })),
        "importEvents" | "importSecrets" => ndjson(),
        "pushIncrementalImport" => {
            let mut event = event_schema();
            if let Some(p) = event.get_mut("properties").and_then(Value::as_object_mut) {
                p.remove("version");
            }
            json_body(json!({
                "type": "object",
                "required": ["events"],
                "properties": {"events": {"type": "array", "items": event}}
            }))
        }
        "saveStreamSnapshot" => json_body(json!({
            "type": "object",
            "required": ["aggregateId", "streamVersion", "data"],
            "properties": {
                "id": {"type": "string"},
                "aggregateId": {"type": "string"},
                "aggregate": {"type": ["string", "null"]},
                "context": {"type": ["string", "null"]},
                "streamVersion": {"type": "integer", "minimum": 0},
                "snapshotVersion": {"type": "integer", "minimum": 0},
                "timestamp": {"type": "string"},
                "data": {}
            }
        })),
        "saveSnapshot" => json_body(json!({
            "type": "object",
            "required": ["content"],
            "properties": {"content": {"type": "string"}}
        })),
        "setSecret" => json_body(json!({
            "type": "object",
            "required": ["secret"],
            "properties": {
                "secret": {"type": "string"},
                "commitId": {"type": "string"},
                "expectedVersion": expected_version_schema(),
                "events": {"type": "array", "items": event_schema()}
            }
        })),
        "deleteSecret" => json!({"required": false, "content": {"application/json": {"schema": {
            "type": "object",
            "properties": {
                "commitId": {"type": "string"},
                "expectedVersion": expected_version_schema(),
                "events": {"type": "array", "items": event_schema()}
            }
        }}}}),
        "markDispatchedAt" => json_body(json!({
            "type": "object",
            "required": ["positions"],
            "properties": {"positions": {"type": "array", "items": {"type": "integer", "minimum": 1}}}
        })),
        "importSnapshots" => json_body(json!({
            "type": "object",
            "required": ["snapshots"],
            "properties": {"snapshots": {"type": "array", "items": {
                "type": "object",
                "required": ["key", "content", "timestamp"],
                "properties": {
                    "key": {"type": "string"},
                    "content": {"type": "string"},
                    "timestamp": {"type": "string"}
                }
            }}}
        })),
        _ => return None,
    })
}

/// The OpenAPI 3.1 document.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for o in OPERATIONS {
        let entry = paths.entry(o.path.to_owned()).or_insert_with(|| json!({}));
        let status = o.ok.to_string();
        let mut responses = Map::new();
        responses.insert(status, json!({"description": "success"}));
        responses.insert(
            "default".into(),
            json!({
                "description": "an error (API.md status table)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            }),
        );
        let mut parameters = path_parameters(o.path);
        parameters.extend(query_parameters(o.id).into_iter().map(query_parameter));
        let mut operation = json!({
            "operationId": o.id,
            "summary": o.summary,
            "parameters": parameters,
            "responses": responses,
        });
        if let (Some(body), Some(fields)) = (request_body(o.id), operation.as_object_mut()) {
            fields.insert("requestBody".into(), body);
        }
        if let Some(methods) = entry.as_object_mut() {
            methods.insert(o.method.to_owned(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Annals HTTP API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
            }}
        }}}
    })
}
