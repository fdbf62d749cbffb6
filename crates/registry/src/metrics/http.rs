//! The request families: counts, latencies and body bytes by route, uploads in flight, and
//! auth failures by reason.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Latency buckets, in seconds: a manifest GET answers in well under a millisecond, a layer
/// upload can take minutes.
pub(super) const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// A histogram with [`LATENCY_BUCKETS`] (a plain function, so families can make them).
pub(super) fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The methods a label may name; anything else is `other`, so a client cannot invent series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Request counts, latencies, body bytes, uploads in flight and auth failures.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    bytes_in: Family<RouteLabels, Counter>,
    bytes_out: Family<RouteLabels, Counter>,
    uploads_in_flight: Gauge,
    auth_failures: Family<ReasonLabels, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            uploads_in_flight: Gauge::default(),
            auth_failures: Family::default(),
        }
    }
}

/// What one finished request is recorded as.
pub struct Finished {
    /// [`crate::route::Route::name`] of its path.
    pub route: &'static str,
    /// Its method.
    pub method: Method,
    /// The status answered.
    pub status: StatusCode,
    /// From the request's arrival to the end of the response body.
    pub elapsed: Duration,
}

impl HttpMetrics {
    /// Adds the families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "Requests answered, by route, method and status code",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to the end of its response body",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register_with_unit(
            "http_request_body",
            "Request body bytes received, by route",
            Unit::Bytes,
            self.bytes_in.clone(),
        );
        registry.register_with_unit(
            "http_response_body",
            "Response body bytes sent, by route",
            Unit::Bytes,
            self.bytes_out.clone(),
        );
        registry.register(
            "uploads_in_flight",
            "Blob upload requests (POST, PATCH, PUT) whose body is being received",
            self.uploads_in_flight.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused by authentication or authorization, by reason",
            self.auth_failures.clone(),
        );
    }

    /// Marks a request as started: an upload that carries data counts as in flight until the
    /// returned guard is dropped (when its handler has answered).
    pub fn begin(&self, route: &'static str, method: &Method) -> InFlight {
        let upload = route == "blob_upload" && matches!(*method, Method::POST | Method::PATCH | Method::PUT);
        InFlight(upload.then(|| {
            self.uploads_in_flight.inc();
            self.uploads_in_flight.clone()
        }))
    }

    /// Wraps a request body so the bytes that arrive count towards `route`.
    pub fn count_request<B>(&self, route: &'static str, body: B) -> CountedBody<B> {
        counted(&self.bytes_in, route, body)
    }

    /// Wraps a response body so the bytes sent count towards `route`.
    pub fn count_response<B>(&self, route: &'static str, body: B) -> CountedBody<B> {
        counted(&self.bytes_out, route, body)
    }

    /// Records a finished request.
    pub fn finish(&self, request: &Finished) {
        let (route, method) = (request.route, method_label(&request.method));
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: request.status.as_u16(),
            })
            .inc();
        self.duration
            .get_or_create(&LatencyLabels { route, method })
            .observe(request.elapsed.as_secs_f64());
    }

    /// Records an auth refusal (see [`auth_failure_reason`]).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason }).inc();
    }
}

fn counted<B>(family: &Family<RouteLabels, Counter>, route: &'static str, body: B) -> CountedBody<B> {
    CountedBody {
        inner: body,
        counter: family.get_or_create(&RouteLabels { route }).clone(),
        seen: 0,
        on_end: None,
    }
}

/// Why a response refused a request, as a label from a fixed set; `None` when it was no
/// refusal. Only the auth layer answers 401, 403 and 429, so the status says it was auth;
/// a 401 to a request without credentials is the usual first step of a login (every docker
/// push starts with one) and is told apart from a credential that did not work. A Bearer
/// challenge's `error` says what was wrong with a token.
pub fn auth_failure_reason(
    status: StatusCode,
    sent_credentials: bool,
    challenge: Option<&str>,
) -> Option<&'static str> {
    match status {
        StatusCode::UNAUTHORIZED if !sent_credentials => Some("missing_credentials"),
        StatusCode::UNAUTHORIZED => {
            let error = challenge.unwrap_or_default();
            Some(if error.contains("error=\"invalid_token\"") {
                "invalid_token"
            } else if error.contains("error=\"insufficient_scope\"") {
                "insufficient_scope"
            } else if error.contains("error=\"invalid_request\"") {
                "wrong_scheme"
            } else {
                "invalid_credentials"
            })
        }
        StatusCode::FORBIDDEN => Some("denied"),
        StatusCode::TOO_MANY_REQUESTS => Some("rate_limited"),
        _ => None,
    }
}

/// Keeps an upload counted in flight; dropping it ends that.
pub struct InFlight(Option<Gauge>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}

/// What a [`CountedBody`] calls when it is done, with the bytes that passed.
type OnEnd = Box<dyn FnOnce(u64) + Send>;

/// A body that adds what passes through it to a byte counter, frame by frame (so a transfer
/// in progress shows in the metric, and one cut off counts what did pass), and tells
/// [`on_end`](CountedBody::on_end) the total when it is done or dropped.
pub struct CountedBody<B> {
    inner: B,
    counter: Counter,
    seen: u64,
    on_end: Option<OnEnd>,
}

impl<B> CountedBody<B> {
    /// Calls `f` with the bytes that passed once the body is done (or dropped, when the peer
    /// goes away), so what it records covers the whole transfer.
    pub fn on_end(mut self, f: impl FnOnce(u64) + Send + 'static) -> CountedBody<B> {
        self.on_end = Some(Box::new(f));
        self
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            self.counter.inc_by(n);
            self.seen += n;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.seen);
        }
    }
}
