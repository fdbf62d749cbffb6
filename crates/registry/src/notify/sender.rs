//! Delivery to one endpoint: a task that takes events from the endpoint's queue in order and
//! POSTs each in its own envelope, retrying a failed delivery after a delay that doubles per
//! failure (up to the endpoint's maximum) until the receiver takes it. Later events wait
//! behind it, so a receiver that comes back gets them in the order they happened.
//!
//! As in distribution, any 2xx or 3xx status means delivered; anything else, a connection
//! error or a timeout is retried.

use std::time::Duration;

use tokio::sync::mpsc;

use super::config::EndpointConfig;
use super::event::{EVENTS_MEDIA_TYPE, Envelope, Event};
use super::metrics::EndpointCounters;

/// Why an endpoint's HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("notification endpoint {endpoint}: {reason}")]
pub struct SenderError {
    /// The endpoint's name.
    pub endpoint: String,
    /// What failed.
    pub reason: String,
}

/// What a sender needs besides its queue.
pub(super) struct Sender {
    pub name: String,
    pub config: EndpointConfig,
    pub counters: EndpointCounters,
    pub client: reqwest::Client,
}

impl Sender {
    /// A sender with an HTTP client for `config`: its headers on every request, its timeout
    /// on every attempt, the system's trusted roots for `https`.
    pub fn new(
        name: String,
        config: EndpointConfig,
        counters: EndpointCounters,
    ) -> Result<Sender, SenderError> {
        let error = |reason: String| SenderError {
            endpoint: name.clone(),
            reason,
        };
        let tls = crate::tls::client_config(None).map_err(|e| error(e.to_string()))?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("rbuild-registry/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout())
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| error(e.to_string()))?;
        Ok(Sender {
            name,
            config,
            counters,
            client,
        })
    }

    /// Delivers what arrives on `queue` until every sending side is gone.
    pub async fn run(self, mut queue: mpsc::Receiver<Event>) {
        while let Some(event) = queue.recv().await {
            self.deliver(event).await;
        }
    }

    /// Sends one event, retrying until the endpoint acknowledges it.
    async fn deliver(&self, event: Event) {
        let body = match serde_json::to_vec(&Envelope { events: vec![event] }) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!("notification endpoint {}: cannot encode an event: {e}", self.name);
                return;
            }
        };
        let mut delay = self.config.backoff();
        let mut failures = 0u64;
        loop {
            match self.attempt(body.clone()).await {
                Ok(()) => {
                    self.counters.on_delivered();
                    if failures > 0 {
                        tracing::info!(
                            "notification endpoint {} took the event after {failures} failed attempts",
                            self.name
                        );
                    }
                    return;
                }
                Err(reason) => {
                    failures += 1;
                    self.counters.on_failure();
                    tracing::warn!(
                        "notification endpoint {} ({}): {reason}; attempt {failures} failed, retrying in {}ms",
                        self.name,
                        self.config.url.loggable(),
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                    delay = next_delay(delay, self.config.max_backoff());
                }
            }
        }
    }

    /// One POST of an encoded envelope.
    async fn attempt(&self, body: Vec<u8>) -> Result<(), String> {
        let response = self
            .client
            .post(self.config.url.as_str())
            // Per request rather than as the client's defaults, which keep one value per name.
            .headers(self.config.headers.0.clone())
            .header(http::header::CONTENT_TYPE, EVENTS_MEDIA_TYPE)
            .body(body)
            .send()
            .await
            // The URL is in the log line already, without what may be a credential.
            .map_err(|e| error_chain(&e.without_url()))?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

/// The delay after another failure: double, capped.
fn next_delay(delay: Duration, max: Duration) -> Duration {
    delay.saturating_mul(2).min(max)
}

/// An error with its causes (reqwest's own message says only "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum() {
        let max = Duration::from_millis(1000);
        let mut delay = Duration::from_millis(100);
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(delay.as_millis());
            delay = next_delay(delay, max);
        }
        assert_eq!(seen, [100, 200, 400, 800, 1000, 1000]);
    }
}
