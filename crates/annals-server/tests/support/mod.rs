//! What the server's HTTP tests share: a server on 127.0.0.1 over a fresh data directory,
//! requests with their answers parsed, and a graceful stop that must finish.

// Not every test binary uses every helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use annals_server::{ServeError, Server, ServerConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A server running in the test's runtime.
pub struct Running {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// A client for it.
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    _dir: tempfile::TempDir,
}

/// A server with the default configuration.
pub async fn start() -> Running {
    start_with(|config| config).await
}

/// A server with the configuration `configure` makes of the default one.
pub async fn start_with(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config =
        configure(ServerConfig::new(dir.path()).listen(SocketAddr::from(([127, 0, 0, 1], 0))));
    let server = Server::bind(config).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    Running {
        url,
        http: reqwest::Client::new(),
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

/// The status and the body of an answer: its JSON, or its text as a JSON string.
pub async fn answer(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

impl Running {
    /// The URL of `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A request with an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, self.at(path));
        if let Some(b) = body {
            r = r.json(&b);
        }
        answer(r.send().await.unwrap()).await
    }

    /// A POST of an NDJSON body.
    pub async fn ndjson(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.at(path))
            .header("content-type", "application/x-ndjson")
            .body(body);
        answer(r.send().await.unwrap()).await
    }

    /// Creates the store `name` (201 expected).
    pub async fn create(&self, name: &str) {
        let (status, body) = self
            .call(Method::PUT, &format!("/v1/stores/{name}"), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Stops the server; its graceful shutdown must finish within 10 s.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("graceful shutdown finishes")
            .unwrap()
            .unwrap();
    }
}
