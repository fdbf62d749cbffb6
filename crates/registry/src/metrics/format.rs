//! The two exposition formats a scrape may ask for. prometheus-client writes OpenMetrics,
//! which Prometheus asks for first; clients that do not (curl, `promtool check metrics`, older
//! scrapers) get the classic text format 0.0.4, as client_golang's handler does. The two differ
//! only in metadata: OpenMetrics names a counter family without its `_total` suffix, has
//! `# UNIT` lines and ends with `# EOF`; the samples are the same.

use http::HeaderMap;
use http::header::ACCEPT;

/// OpenMetrics 1.0.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The classic Prometheus text format.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the scraper accepts OpenMetrics (Prometheus says so in `Accept`).
pub fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// Rewrites an OpenMetrics exposition as text format 0.0.4: counter families are named by
/// their samples' `_total` name, and `# UNIT` and `# EOF` lines go.
pub fn to_text(openmetrics: &str) -> String {
    let mut text = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // The type follows the help line; the family's name depends on it.
            help = Some(rest.split_once(' ').map_or("", |(_, words)| words));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(words) = help.take() {
                text.push_str(&format!("# HELP {name} {words}\n"));
            }
            text.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_sample_names() {
        let openmetrics = "\
# HELP app_requests Requests.
# TYPE app_requests counter
app_requests_total{route=\"blob\"} 3
# HELP app_body_bytes Bytes.
# TYPE app_body_bytes counter
# UNIT app_body_bytes bytes
app_body_bytes_total 10
# HELP app_in_flight In flight.
# TYPE app_in_flight gauge
app_in_flight 1
# HELP app_duration_seconds Latency.
# TYPE app_duration_seconds histogram
# UNIT app_duration_seconds seconds
app_duration_seconds_sum 0.5
app_duration_seconds_count 1
app_duration_seconds_bucket{le=\"+Inf\"} 1
# EOF
";
        let text = "\
# HELP app_requests_total Requests.
# TYPE app_requests_total counter
app_requests_total{route=\"blob\"} 3
# HELP app_body_bytes_total Bytes.
# TYPE app_body_bytes_total counter
app_body_bytes_total 10
# HELP app_in_flight In flight.
# TYPE app_in_flight gauge
app_in_flight 1
# HELP app_duration_seconds Latency.
# TYPE app_duration_seconds histogram
app_duration_seconds_sum 0.5
app_duration_seconds_count 1
app_duration_seconds_bucket{le=\"+Inf\"} 1
";
        assert_eq!(to_text(openmetrics), text);
    }

    #[test]
    fn prometheus_gets_openmetrics_and_curl_gets_text() {
        let mut headers = HeaderMap::new();
        assert!(!wants_openmetrics(&headers));
        headers.insert(ACCEPT, "*/*".parse().unwrap());
        assert!(!wants_openmetrics(&headers));
        // What Prometheus 2.x sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        headers.insert(ACCEPT, prometheus.parse().unwrap());
        assert!(wants_openmetrics(&headers));
    }
}
