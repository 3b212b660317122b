//! HTTP metric families and the `/metrics` text exposition. Every family lives on the default
//! registry (which also carries the process collector: RSS, CPU, open fds).

use prometheus::{
    register_histogram_vec, register_int_counter_vec, Encoder, HistogramVec, IntCounterVec,
    TextEncoder,
};
use std::sync::LazyLock;

/// `http_requests_total{service,method,route,status}`; `route` is the route template.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "http_requests_total",
        "HTTP requests answered, by service, method, route template and status",
        &["service", "method", "route", "status"]
    )
    .expect("metric registers once")
});

/// `http_request_duration_seconds{service,method,route}`.
pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "http_request_duration_seconds",
        "Time from request to response, by service, method and route template",
        &["service", "method", "route"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

/// Registers every family so `/metrics` lists them from the first scrape.
pub fn init() {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_DURATION);
    recsys_actors::metrics::init();
}

/// The default registry in the Prometheus text format.
pub fn render() -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut buffer)
        .expect("text encoding cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}
