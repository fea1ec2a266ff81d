//! Engine families: ticks, mode, the samplers' own cost, bottlenecks and proposals by
//! kind and status, applied change batches, and the alert webhook's counters.

use prometheus_client::registry::Unit;

use super::{Families, Labels, Value, labels, seconds, unique_by};
use crate::model::BottleneckKind;
use crate::model::Mode;
use crate::model::ProposalStatus;
use crate::model::Snapshot;

const PROPOSAL_STATUSES: [&str; 7] = [
    "proposed",
    "applying",
    "applied",
    "rolled_back",
    "stale",
    "failed",
    "dismissed",
];

fn status_label(status: &ProposalStatus) -> &'static str {
    match status {
        ProposalStatus::Proposed => "proposed",
        ProposalStatus::Applying => "applying",
        ProposalStatus::Applied { .. } => "applied",
        ProposalStatus::RolledBack { .. } => "rolled_back",
        ProposalStatus::Stale { .. } => "stale",
        ProposalStatus::Failed { .. } => "failed",
        ProposalStatus::Dismissed => "dismissed",
    }
}

pub(super) fn engine_families(snap: &Snapshot, f: &mut Families) {
    f.counter(
        "engine_ticks",
        None,
        "Snapshots the engine has published since it started.",
    )
    .push(Labels::none(), snap.seq);
    f.gauge("engine_interval", seconds(), "The sampling tick in force.")
        .push(Labels::none(), snap.interval_ms as f64 / 1000.0);
    f.gauge(
        "snapshot_timestamp",
        seconds(),
        "When the exported snapshot was taken (Unix time).",
    )
    .push(Labels::none(), snap.taken_at_ms as f64 / 1000.0);
    let mode = f.gauge(
        "engine_mode",
        None,
        "The engine's mode (1 on the series whose mode label it is, else 0).",
    );
    for m in [Mode::Conservative, Mode::Balanced, Mode::Aggressive] {
        mode.push(labels([("mode", m.label())]), snap.mode == m);
    }
    f.gauge(
        "engine_auto_fix",
        None,
        "1 when fixes the mode allows are applied without asking.",
    )
    .push(Labels::none(), snap.auto_fix);
    samplers(snap, f);

    let bottlenecks = f.gauge(
        "bottlenecks",
        None,
        "Bottlenecks currently raised, by kind.",
    );
    for kind in BottleneckKind::ALL {
        let n = snap.bottlenecks.iter().filter(|b| b.kind == kind).count();
        bottlenecks.push(labels([("kind", kind.name())]), n);
    }
    let proposals = f.gauge("proposals", None, "Proposals the engine holds, by status.");
    for status in PROPOSAL_STATUSES {
        let n = snap
            .proposals
            .iter()
            .filter(|p| status_label(&p.status) == status)
            .count();
        proposals.push(labels([("status", status)]), n);
    }
    f.gauge(
        "change_batches_active",
        None,
        "Batches of changes applied to the host and not rolled back (from the journal).",
    )
    .push(Labels::none(), snap.changes.active.len());
}

fn samplers(snap: &Snapshot, f: &mut Families) {
    type Pick = fn(&crate::model::SamplerHealth) -> Value;
    let figures: [(&'static str, Option<Unit>, bool, &'static str, Pick); 5] = [
        (
            "sampler_cpu",
            seconds(),
            true,
            "CPU time the sampler's rounds have cost (its own overhead).",
            |s| Value::Float(s.total_cpu_us as f64 / 1e6),
        ),
        (
            "sampler_rounds",
            None,
            true,
            "Successful rounds of the sampler.",
            |s| s.rounds.into(),
        ),
        (
            "sampler_last_round_duration",
            seconds(),
            false,
            "Wall time of the sampler's last round.",
            |s| Value::Float(s.last_duration_us as f64 / 1e6),
        ),
        (
            "sampler_last_round_cpu",
            seconds(),
            false,
            "CPU time of the sampler's last round.",
            |s| Value::Float(s.last_cpu_us as f64 / 1e6),
        ),
        (
            "sampler_consecutive_failures",
            None,
            false,
            "Failed or overrun rounds in a row (0 when healthy).",
            |s| s.failures.into(),
        ),
    ];
    for (name, unit, counter, help, pick) in figures {
        let family = f.add(name, unit, counter, help);
        for s in unique_by(&snap.samplers, |s| s.name.as_str()) {
            family.push(labels([("sampler", &s.name)]), pick(s));
        }
    }
}

pub(super) fn alert_families(f: &mut Families) {
    let counts = crate::alerts::counts();
    f.counter(
        "alerts_sent",
        None,
        "Bottleneck alerts the webhook receiver accepted.",
    )
    .push(Labels::none(), counts.sent);
    f.counter(
        "alerts_failed",
        None,
        "Bottleneck alerts given up on after every retry failed.",
    )
    .push(Labels::none(), counts.failed);
    f.counter(
        "alerts_dropped",
        None,
        "Bottleneck alerts dropped because the queue was full (oldest first).",
    )
    .push(Labels::none(), counts.dropped);
}
