//! Load balancer families: proxy totals, pools and one series per backend.

use prometheus_client::registry::Unit;

use super::{Families, LabelValue, Labels, Value, labels, seconds, unique_by};
use crate::model::Snapshot;
use sutazai_balancer::{BackendSnapshot, BalancerSnapshot, CircuitState, Health};

const HEALTH_STATES: [Health; 4] = [Health::Unknown, Health::Up, Health::Down, Health::Ejected];
const CIRCUIT_STATES: [CircuitState; 3] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
];

/// The circuit state as the JSON API spells it (`half_open`).
fn circuit_label(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
    }
}

pub(super) fn balancer_families(snap: &Snapshot, f: &mut Families) {
    f.gauge(
        "balancer_enabled",
        None,
        "1 when the load balancer runs ([balancer] enabled = true), else 0.",
    )
    .push(Labels::none(), snap.balancer.is_some());
    let Some(b) = &snap.balancer else {
        return;
    };
    type Total = fn(&BalancerSnapshot) -> u64;
    let totals: [(&'static str, &'static str, Total); 6] = [
        (
            "balancer_requests",
            "Requests the proxy received since it started.",
            |b| b.requests_total,
        ),
        (
            "balancer_rejected",
            "Requests answered 503 (every backend full past the queue, or none up).",
            |b| b.rejected_total,
        ),
        (
            "balancer_retries",
            "Retries sent to another backend (idempotent requests only).",
            |b| b.retries_total,
        ),
        (
            "balancer_retries_over_budget",
            "Retries not sent because the retry budget was spent.",
            |b| b.retries_over_budget_total,
        ),
        (
            "balancer_bad_requests",
            "Requests answered 400, 408 or 431 before reaching a backend.",
            |b| b.bad_requests_total,
        ),
        (
            "balancer_general_path_connections",
            "Client connections served by the general (hyper) path from some request on: h2c, and HTTP/1.x requests the fast path leaves to it.",
            |b| b.general_path_connections_total,
        ),
    ];
    for (name, help, pick) in totals {
        f.counter(name, None, help).push(Labels::none(), pick(b));
    }
    f.gauge(
        "balancer_queued",
        None,
        "Requests waiting for a backend with room right now.",
    )
    .push(Labels::none(), b.queued);
    f.gauge(
        "balancer_docker_skipped",
        None,
        "Containers labelled sutazai.backend.port that are not backends (the pane and GET /api/balancer say why).",
    )
    .push(Labels::none(), b.docker_skipped.len() as u64);
    busy_poll_families(b, f);
    let panics = f.counter(
        "balancer_pool_panic_choices",
        None,
        "Backends chosen although ejected or with an open circuit, because every backend of the pool was (panic mode).",
    );
    for pool in unique_by(&b.pools, |pool| &pool.name) {
        panics.push(labels([("pool", &pool.name)]), pool.panic_choices_total);
    }
    balancer_backend_families(b, f);
}

/// What busy polling did and cost (nothing while it is off).
fn busy_poll_families(b: &BalancerSnapshot, f: &mut Families) {
    let poll = &b.busy_poll;
    f.gauge(
        "balancer_busy_poll_window",
        seconds(),
        "The longest stretch the proxy's thread polls for work before sleeping (0: off).",
    )
    .push(
        Labels::none(),
        Value::Float(poll.window_us as f64 / 1_000_000.0),
    );
    let stretches = f.counter(
        "balancer_busy_poll_stretches",
        None,
        "Stretches of polling for work, by how they ended: paid (work came) or wasted (the window ran out, then the thread slept).",
    );
    stretches.push(labels([("outcome", "paid")]), poll.paid_total);
    stretches.push(labels([("outcome", "wasted")]), poll.wasted_total);
    f.counter(
        "balancer_busy_poll",
        seconds(),
        "Time the proxy's thread spent polling before work came or the window ran out (wall clock, other tasks' turns included).",
    )
    .push(
        Labels::none(),
        Value::Float(poll.polling_ns_total as f64 / 1e9),
    );
}

fn balancer_backend_families(b: &BalancerSnapshot, f: &mut Families) {
    let labelled: Vec<(Labels, &BackendSnapshot)> = b
        .pools
        .iter()
        .flat_map(|pool| {
            pool.backends
                .iter()
                .map(move |x| (labels([("pool", &pool.name), ("backend", &x.id)]), x))
        })
        .collect();
    let all: Vec<&(Labels, &BackendSnapshot)> = unique_by(&labelled, |(labels, _)| labels);
    type Pick = fn(&BackendSnapshot) -> Option<Value>;
    let figures: [(&'static str, Option<Unit>, bool, &'static str, Pick); 11] = [
        (
            "balancer_backend_requests",
            None,
            true,
            "Requests sent to the backend since it joined.",
            |x| Some(x.requests_total.into()),
        ),
        (
            "balancer_backend_errors",
            None,
            true,
            "5xx answers, connect failures and timeouts of the backend.",
            |x| Some(x.errors_total.into()),
        ),
        (
            "balancer_backend_in_flight",
            None,
            false,
            "Requests the backend is serving right now.",
            |x| Some(x.in_flight.into()),
        ),
        (
            "balancer_backend_max_connections",
            None,
            false,
            "Requests the backend may serve at once (more wait in the queue).",
            |x| Some(x.max_connections.into()),
        ),
        (
            "balancer_backend_weight",
            None,
            false,
            "The backend's weight for the weighted algorithms.",
            |x| Some(x.weight.into()),
        ),
        (
            "balancer_backend_latency_p50",
            seconds(),
            false,
            "Median latency of the backend's requests over the last tick (absent without any).",
            |x| x.latency_p50_ms.map(|ms| Value::Float(ms / 1000.0)),
        ),
        (
            "balancer_backend_latency_p99",
            seconds(),
            false,
            "99th percentile latency of the backend's requests over the last tick.",
            |x| x.latency_p99_ms.map(|ms| Value::Float(ms / 1000.0)),
        ),
        (
            "balancer_backend_ewma",
            seconds(),
            false,
            "The peak-EWMA latency estimate the predictive algorithm ranks backends by.",
            |x| Some(Value::Float(x.ewma_ms / 1000.0)),
        ),
        (
            "balancer_backend_ejections",
            None,
            true,
            "Times the backend was ejected as an outlier.",
            |x| Some(x.ejections.into()),
        ),
        (
            "balancer_backend_ejected_remaining",
            seconds(),
            false,
            "Seconds until an ejected backend comes back (absent while it is in).",
            |x| x.ejected_for_secs.map(Value::from),
        ),
        (
            "balancer_backend_draining",
            None,
            false,
            "1 while the backend drains (set through the API): no new requests.",
            |x| Some(u64::from(x.draining).into()),
        ),
    ];
    for (name, unit, counter, help, pick) in figures {
        let family = f.add(name, unit, counter, help);
        for (labels, backend) in &all {
            if let Some(value) = pick(backend) {
                family.push(labels.clone(), value);
            }
        }
    }
    let health = f.gauge(
        "balancer_backend_health",
        None,
        "The backend's health (1 on the series whose state label it is, else 0).",
    );
    for (labels, backend) in &all {
        for state in HEALTH_STATES {
            health.push(with_state(labels, state.name()), backend.health == state);
        }
    }
    let circuit = f.gauge(
        "balancer_backend_circuit",
        None,
        "The backend's circuit breaker (1 on the series whose state label it is, else 0).",
    );
    for (labels, backend) in &all {
        for state in CIRCUIT_STATES {
            circuit.push(
                with_state(labels, circuit_label(state)),
                backend.circuit == state,
            );
        }
    }
}

/// `labels` plus `state="..."`, for one-hot state families.
fn with_state(labels: &Labels, state: &str) -> Labels {
    Labels(
        labels
            .0
            .iter()
            .cloned()
            .chain(std::iter::once(("state", LabelValue(state.to_string()))))
            .collect(),
    )
}
