//! Event notifications: push, pull, mount and delete events POSTed to the endpoints
//! `[[notifications]]` lists, in distribution's envelope (`event`), so receivers written for
//! distribution work unchanged.
//!
//! The flow: a finished request becomes events (`observe`, called once per request by the
//! handler dispatch); each endpoint's filter (`filter`) decides whether it wants one; wanted
//! events go into the endpoint's bounded queue, never waiting: when the queue is full the event
//! is dropped, counted and logged, so a slow or dead receiver never holds up a push. One task
//! per endpoint (`sender`) delivers its queue in order, retrying with exponential backoff.
//!
//! Events live in memory only: what is queued when the process stops is lost (as in
//! distribution).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rbuild_registry::{Config, Registry};
//!
//! let config: Config = toml::from_str(
//!     "[[notifications]]\nurl = \"http://127.0.0.1:9000/events\"\nactions = [\"push\"]\n",
//! )?;
//! let registry = Registry::open(std::path::Path::new("/tmp/registry"), config).await?;
//! // `server::run` starts the senders; anything else serving the registry calls this.
//! registry.notifier().start("127.0.0.1:5000".parse()?)?;
//! # Ok(()) }
//! ```

mod config;
mod event;
mod filter;
mod metrics;
mod observe;
mod resolved;
mod sender;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::sync::mpsc;

pub use config::{EndpointConfig, EndpointUrl, Headers, Ignore};
pub use event::{
    Actor, BLOB_MEDIA_TYPE, EVENTS_MEDIA_TYPE, Envelope, Event, EventAction, RequestRecord, Source, Target,
};
pub use metrics::{EndpointLabels, NotifyMetrics};
pub use sender::SenderError;

use metrics::EndpointCounters;

/// The configured endpoints, their queues and their metrics.
pub struct Notifier {
    endpoints: Vec<Endpoint>,
    metrics: NotifyMetrics,
    instance_id: String,
    /// `host:port` of this registry, known once the listener is bound.
    source_addr: OnceLock<String>,
    /// Tags clients resolved with `HEAD`, so the `GET` by digest that follows is not a second pull.
    recent: resolved::RecentTags,
}

/// One endpoint's side of its queue.
struct Endpoint {
    name: String,
    config: EndpointConfig,
    counters: EndpointCounters,
    queue: mpsc::Sender<Event>,
    /// The receiving side, until [`Notifier::start`] hands it to the sender task.
    pending: Mutex<Option<mpsc::Receiver<Event>>>,
    /// The second (since the epoch) of the last "dropped" warning, so a dead receiver under
    /// heavy traffic costs one log line a second, not one per request.
    last_drop_warning: AtomicU64,
}

impl Notifier {
    /// Queues for the enabled endpoints of `configs`. Nothing is sent until [`Notifier::start`].
    pub fn new(configs: &[EndpointConfig]) -> Notifier {
        let metrics = NotifyMetrics::default();
        let endpoints = configs
            .iter()
            .enumerate()
            .filter(|(_, config)| !config.disabled)
            .map(|(index, config)| {
                let name = config.name.clone().unwrap_or_else(|| index.to_string());
                let (queue, receiver) = mpsc::channel(config.queue_size.max(1));
                Endpoint {
                    counters: metrics.endpoint(&name),
                    name,
                    config: config.clone(),
                    queue,
                    pending: Mutex::new(Some(receiver)),
                    last_drop_warning: AtomicU64::new(u64::MAX),
                }
            })
            .collect();
        Notifier {
            endpoints,
            metrics,
            instance_id: uuid::Uuid::new_v4().to_string(),
            source_addr: OnceLock::new(),
            recent: resolved::RecentTags::default(),
        }
    }

    /// Whether no endpoint is enabled (and so requests need not be turned into events).
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The metric families, to register on `/metrics`.
    pub fn metrics(&self) -> &NotifyMetrics {
        &self.metrics
    }

    /// Starts one sender task per endpoint on the current tokio runtime; `local` is the
    /// address the registry listens on (the events' `source.addr` names its port). A second
    /// call does nothing.
    pub fn start(&self, local: SocketAddr) -> Result<(), SenderError> {
        let _ = self.source_addr.set(format!("{}:{}", host_name(), local.port()));
        for endpoint in &self.endpoints {
            let Some(receiver) = endpoint.pending.lock().ok().and_then(|mut r| r.take()) else {
                continue;
            };
            let sender = sender::Sender::new(
                endpoint.name.clone(),
                endpoint.config.clone(),
                endpoint.counters.clone(),
            )?;
            tracing::info!(
                "notifications: sending events to endpoint {} ({})",
                endpoint.name,
                endpoint.config.url.loggable()
            );
            tokio::spawn(sender.run(receiver));
        }
        Ok(())
    }

    /// This instance, as events name it.
    pub fn source(&self) -> Source {
        Source {
            addr: self.source_addr.get().cloned().unwrap_or_default(),
            instance_id: self.instance_id.clone(),
        }
    }

    /// Queues `event` for every endpoint that wants it. Never waits: an endpoint whose queue
    /// is full loses the event.
    pub fn publish(&self, event: &Event) {
        for endpoint in &self.endpoints {
            if endpoint.config.accepts(event) {
                endpoint.offer(event.clone());
            }
        }
    }
}

impl Endpoint {
    fn offer(&self, event: Event) {
        match self.queue.try_send(event) {
            Ok(()) => self.counters.on_queued(),
            Err(mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event)) => {
                let dropped = self.counters.on_dropped();
                let now = rbuild_oci::time::now().unsigned_abs();
                if self.last_drop_warning.swap(now, Ordering::Relaxed) != now {
                    tracing::warn!(
                        "notification endpoint {} ({}): queue of {} events is full; dropped a {} event for {} ({dropped} dropped so far)",
                        self.name,
                        self.config.url.loggable(),
                        self.config.queue_size.max(1),
                        event.action.as_str(),
                        event.target.repository,
                    );
                }
            }
        }
    }
}

/// This machine's host name, as distribution's `source.addr` names it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: EventAction, media_type: &str) -> Event {
        Event {
            id: "1".to_owned(),
            timestamp: "2026-01-01T00:00:00Z".to_owned(),
            action,
            target: Target {
                repository: "team/app".to_owned(),
                media_type: Some(media_type.to_owned()),
                ..Target::default()
            },
            request: RequestRecord::default(),
            actor: Actor::default(),
            source: Source::default(),
        }
    }

    fn endpoint(toml: &str) -> EndpointConfig {
        toml::from_str(&format!("url = \"http://127.0.0.1:1/\"\n{toml}")).unwrap()
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let notifier = Notifier::new(&[endpoint("name = \"tiny\"\nqueue_size = 2")]);
        for _ in 0..5 {
            notifier.publish(&event(EventAction::Push, BLOB_MEDIA_TYPE));
        }
        let counters = notifier.metrics().endpoint("tiny");
        assert_eq!(counters.queued.get(), 2);
        assert_eq!(counters.dropped.get(), 3);
        assert_eq!(counters.pending.get(), 2);
    }

    #[test]
    fn each_endpoint_gets_what_its_filter_admits() {
        let notifier = Notifier::new(&[
            endpoint("actions = [\"push\"]"),
            endpoint(&format!("ignoredmediatypes = [\"{BLOB_MEDIA_TYPE}\"]")),
            endpoint("disabled = true"),
        ]);
        notifier.publish(&event(EventAction::Push, BLOB_MEDIA_TYPE));
        notifier.publish(&event(
            EventAction::Pull,
            "application/vnd.oci.image.manifest.v1+json",
        ));
        assert_eq!(notifier.metrics().endpoint("0").queued.get(), 1);
        assert_eq!(notifier.metrics().endpoint("1").queued.get(), 1);
        assert_eq!(notifier.endpoints.len(), 2, "a disabled endpoint gets no queue");
    }

    #[tokio::test]
    async fn queued_events_come_out_in_order() {
        let notifier = Notifier::new(&[endpoint("")]);
        for action in [EventAction::Push, EventAction::Pull, EventAction::Delete] {
            notifier.publish(&event(action, BLOB_MEDIA_TYPE));
        }
        let mut receiver = notifier.endpoints[0].pending.lock().unwrap().take().unwrap();
        let mut order = Vec::new();
        while let Ok(event) = receiver.try_recv() {
            order.push(event.action);
        }
        assert_eq!(order, [EventAction::Push, EventAction::Pull, EventAction::Delete]);
    }
}
