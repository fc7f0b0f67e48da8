//! An HTTP webhook (feature `webhook`): each message is `POST`ed as its JSON wire body.
//! Server errors (5xx), timeouts and connection failures are retried with exponential
//! backoff; any other non-2xx answer (4xx) fails at once.

use std::time::Duration;

use async_trait::async_trait;

use annals_core::{Error, Result};

use crate::{channel_error, Message, MessageChannel};

const BACKEND: &str = "webhook";

/// How a [`WebhookChannel`] posts and retries.
///
/// ```
/// let c = annals_channels::webhook::WebhookConfig::default();
/// assert_eq!(c.max_attempts, 6);
/// assert_eq!(c.backoff(1), std::time::Duration::from_millis(100));
/// assert_eq!(c.backoff(2), std::time::Duration::from_millis(200));
/// assert_eq!(c.backoff(30), c.max_backoff);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Attempts per message, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the first retry; doubled before each next one.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// The time limit of one request.
    pub timeout: Duration,
    /// A bearer token sent as `Authorization: Bearer …`, if any.
    pub bearer_token: Option<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            bearer_token: None,
        }
    }
}

impl WebhookConfig {
    /// The wait after failed attempt `attempt` (1-based).
    ///
    /// ```
    /// let c = annals_channels::webhook::WebhookConfig::default();
    /// assert_eq!(c.backoff(3), std::time::Duration::from_millis(400));
    /// ```
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Posts each message to one URL with `Content-Type: application/json`; a message is
/// published once the endpoint answered 2xx. A batch is posted message by message, in
/// order. Failures are [`Error::Backend`] with backend `webhook`, naming the status or
/// the connection error and the number of attempts.
///
/// ```no_run
/// use annals_channels::{webhook::{WebhookChannel, WebhookConfig}, Message, MessageChannel};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let channel = WebhookChannel::new("http://127.0.0.1:8080/hook", WebhookConfig::default())?;
/// channel.publish(&Message::aggregate_exists("default", "acc-1".into(), true)).await?;
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    client: reqwest::Client,
    url: reqwest::Url,
    config: WebhookConfig,
}

impl WebhookChannel {
    /// A webhook posting to `url` (`http://` or `https://`); a URL that is not one is
    /// [`Error::InvalidInput`] on field `url`.
    ///
    /// ```
    /// use annals_channels::webhook::{WebhookChannel, WebhookConfig};
    /// assert!(WebhookChannel::new("not a url", WebhookConfig::default()).is_err());
    /// assert!(WebhookChannel::new("http://127.0.0.1:1/h", WebhookConfig::default()).is_ok());
    /// ```
    pub fn new(url: &str, config: WebhookConfig) -> Result<Self> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| Error::invalid("url", format!("{url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid(
                "url",
                format!("{url:?}: a webhook needs http:// or https://"),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::backend(BACKEND, e))?;
        Ok(WebhookChannel {
            client,
            url: parsed,
            config,
        })
    }

    /// Posts one body, retrying as configured.
    async fn post(&self, body: Vec<u8>) -> Result<()> {
        let attempts = self.config.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(token) = &self.config.bearer_token {
                request = request.bearer_auth(token);
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) if response.status().is_server_error() => {
                    format!("{} answered {}", self.url, response.status())
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    return Err(channel_error(
                        BACKEND,
                        format!(
                            "{} refused the message with {status} (not retried): {}",
                            self.url,
                            text.chars().take(200).collect::<String>()
                        ),
                    ));
                }
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    format!("{}: {e}", self.url)
                }
                Err(e) => return Err(Error::backend(BACKEND, e)),
            };
            if attempt >= attempts {
                return Err(channel_error(
                    BACKEND,
                    format!("{failure} (gave up after {attempt} attempts)"),
                ));
            }
            tokio::time::sleep(self.config.backoff(attempt)).await;
        }
    }
}

#[async_trait]
impl MessageChannel for WebhookChannel {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, message: &Message) -> Result<()> {
        self.post(message.to_json()?).await
    }
}
