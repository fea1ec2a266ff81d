//! Prometheus exposition of a snapshot (`GET /metrics`).
//!
//! The output is OpenMetrics 1.0 text, the format the prometheus-client crate writes (serve
//! it as `application/openmetrics-text; version=1.0.0; charset=utf-8`; Prometheus asks for
//! it first). Each scrape builds a plain list of families from the snapshot and hands it to
//! a fresh registry through a [`Collector`]: the snapshot is already the one consistent
//! picture of a tick, so there is no live metric state to keep in sync with it, and a scrape
//! costs one pass over the snapshot (measured by bench/api.sh).
//!
//! Names follow Prometheus conventions: `sutazai_` prefix, base units in the name
//! (`_seconds`, `_bytes`, `_ratio` for 0..1 fractions), `_total` on counters. A value that
//! is missing or not a finite number is left out rather than exported as a guess.
//!
//! The families are grouped by what they describe: `host` (CPU, memory, pressure, disks,
//! network, huge pages, KSM), `agents` (Docker and every agent container), `engine` (ticks,
//! mode, samplers, bottlenecks, proposals, alerts) and `balancer` (the load balancer and its
//! backends). This module holds the intermediate model they fill.

mod agents;
mod balancer;
mod engine;
mod host;
mod pools;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder,
    LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::{Registry, Unit};

use crate::model::Snapshot;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The snapshot as OpenMetrics text, ending with `# EOF`.
pub fn render(snap: &Snapshot) -> String {
    let mut families = Families::default();
    host::host_families(snap, &mut families);
    agents::agent_families(snap, &mut families);
    agents::coordinator_families(snap, &mut families);
    engine::engine_families(snap, &mut families);
    balancer::balancer_families(snap, &mut families);
    pools::pools_families(snap, &mut families);
    engine::alert_families(&mut families);

    let mut registry = Registry::with_prefix("sutazai");
    registry.register_collector(Box::new(families));
    let mut out = String::with_capacity(64 * 1024);
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        // Only a value the encoder refuses gets here; the families filter those out.
        tracing::warn!(target: "sutazai_top::metrics", "encoding metrics failed: {err}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The intermediate model: families of (labels, value)
// ---------------------------------------------------------------------------------------------

/// A label value, escaped as the exposition format requires (the crate writes label values
/// verbatim, so a quote or newline in a container label would corrupt the output).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LabelValue(String);

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        // Runs between escapes go out whole: every write crosses several `dyn Write` layers.
        let mut rest = self.0.as_str();
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..at])?;
            encoder.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        encoder.write_str(rest)
    }
}

/// A series' labels, shared between the families of one agent (cloning is a count bump).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Labels(Arc<[(&'static str, LabelValue)]>);

impl Labels {
    fn none() -> Labels {
        Labels(Arc::new([]))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for label in self.0.iter() {
            label.encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    Labels(
        pairs
            .into_iter()
            .map(|(k, v)| (k, LabelValue(v.to_string())))
            .collect(),
    )
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    fn usable(self, counter: bool) -> bool {
        match self {
            Value::Int(v) => !counter || v >= 0,
            Value::Float(v) => v.is_finite() && (!counter || v >= 0.0),
        }
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        // Above i64::MAX is no real figure (a wrapped subtraction upstream): mark it unusable.
        i64::try_from(v).map_or(Value::Float(f64::NAN), Value::Int)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::from(v as u64)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    /// Through the shortest decimal that reads back as `v`: the snapshot's f32 figures
    /// (0.47) would otherwise be exported with the binary noise of the widening
    /// (0.4699999988079071).
    fn from(v: f32) -> Self {
        Value::Float(v.to_string().parse().unwrap_or(f64::NAN))
    }
}

#[derive(Debug)]
struct Family {
    /// Without the `sutazai_` prefix, the unit and `_total`: the encoder adds them.
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    counter: bool,
    series: Vec<(Labels, Value)>,
}

impl Family {
    fn push(&mut self, labels: Labels, value: impl Into<Value>) {
        let value = value.into();
        if value.usable(self.counter) {
            self.series.push((labels, value));
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kind = if self.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), kind)?;
        for (labels, value) in &self.series {
            if labels.is_empty() {
                encode_value(&mut metric, *value, self.counter)?;
            } else {
                let mut series = metric.encode_family(labels)?;
                encode_value(&mut series, *value, self.counter)?;
            }
        }
        Ok(())
    }
}

fn encode_value(
    metric: &mut prometheus_client::encoding::MetricEncoder,
    value: Value,
    counter: bool,
) -> Result<(), std::fmt::Error> {
    let no_exemplar: Option<&Exemplar<NoLabelSet, f64>> = None;
    match (value, counter) {
        (Value::Int(v), true) => {
            metric.encode_counter(&u64::try_from(v).map_err(|_| std::fmt::Error)?, no_exemplar)
        }
        (Value::Float(v), true) => metric.encode_counter(&v, no_exemplar),
        (Value::Int(v), false) => metric.encode_gauge(&v),
        (Value::Float(v), false) => metric.encode_gauge(&v),
    }
}

/// Every family of one scrape, in output order.
#[derive(Debug, Default)]
struct Families(Vec<Family>);

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        unit: Option<Unit>,
        counter: bool,
        help: &'static str,
    ) -> &mut Family {
        self.0.push(Family {
            name,
            help,
            unit,
            counter,
            series: Vec::new(),
        });
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    fn gauge(&mut self, name: &'static str, unit: Option<Unit>, help: &'static str) -> &mut Family {
        self.add(name, unit, false, help)
    }

    fn counter(
        &mut self,
        name: &'static str,
        unit: Option<Unit>,
        help: &'static str,
    ) -> &mut Family {
        self.add(name, unit, true, help)
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // An empty family would only be a HELP line without data: leave it out.
        for family in self.0.iter().filter(|f| !f.series.is_empty()) {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// The first item of each key. Odd input (two disks of one name, two containers with one
/// id) must never become a duplicate series, which Prometheus would reject; deduplicating
/// the inputs once is far cheaper than checking every series.
fn unique_by<'a, T, K: Eq + Hash>(
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(key(item)))
        .collect()
}

fn ratio() -> Option<Unit> {
    Some(Unit::Other("ratio".to_string()))
}
fn bytes() -> Option<Unit> {
    Some(Unit::Bytes)
}
fn seconds() -> Option<Unit> {
    Some(Unit::Seconds)
}
fn bytes_per_second() -> Option<Unit> {
    Some(Unit::Other("bytes_per_second".to_string()))
}

const KB: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerStat, CpuTimes, DiskStat, PsiLine, PsiResource, SamplerHealth};

    fn odd_snapshot() -> Snapshot {
        let mut snap = Snapshot {
            seq: 3,
            ..Snapshot::default()
        };
        snap.memory.total_kb = 1024;
        snap.memory.available_kb = 4096; // more available than total: used saturates to 0
        snap.cpu.load1 = f32::NAN;
        snap.cpu.load5 = f32::INFINITY;
        snap.cpu.per_cpu = vec![
            (
                0,
                CpuTimes {
                    idle: f32::NAN,
                    user: 1.0,
                    ..CpuTimes::default()
                },
            ),
            (
                0,
                CpuTimes {
                    idle: 50.0,
                    user: 50.0,
                    ..CpuTimes::default()
                },
            ),
            (1, CpuTimes::default()),
        ];
        snap.pressure.cpu = Some(PsiResource {
            some: PsiLine {
                avg10: f32::NAN,
                total_us: 5_000_000,
                ..PsiLine::default()
            },
            full: None,
        });
        snap.disks = vec![DiskStat {
            name: "sd\"a\\\nb".into(),
            read_bytes_per_sec: f64::NEG_INFINITY,
            ..DiskStat::default()
        }];
        let odd = ContainerStat {
            id: "short".into(),
            name: "we\"ird\nname\\".into(),
            state: "exited".into(),
            cpu_pct: f32::NAN,
            mem_bytes: u64::MAX,
            ..ContainerStat::default()
        };
        snap.containers.agents = vec![odd.clone(), odd];
        snap.samplers = vec![SamplerHealth {
            name: "cpu".into(),
            total_cpu_us: u64::MAX,
            rounds: u64::MAX,
            ..SamplerHealth::default()
        }];
        snap
    }

    #[test]
    fn odd_values_are_left_out_and_labels_escaped() {
        let text = render(&odd_snapshot());
        assert!(text.ends_with("# EOF\n"), "{text}");
        for bad in ["NaN", "inf", "Inf"] {
            assert!(!text.contains(bad), "{bad} leaked:\n{text}");
        }
        // NaN load1 and infinite load5 are skipped; load15 (0) stays.
        assert!(!text.contains("sutazai_load1 "), "{text}");
        assert!(!text.contains("sutazai_load5 "), "{text}");
        assert!(text.contains("sutazai_load15 0.0\n"), "{text}");
        // Used memory saturates at 0 instead of wrapping.
        assert!(text.contains("sutazai_memory_used_bytes 0\n"), "{text}");
        // CPU 0 twice: one series (the first usable); CPU 1 has no data yet: none.
        assert_eq!(text.matches("sutazai_cpu_busy_ratio{").count(), 1, "{text}");
        assert!(
            text.contains("sutazai_cpu_busy_ratio{cpu=\"0\"} 0.5\n"),
            "{text}"
        );
        // PSI avg10 NaN skipped; the stall total is kept.
        assert!(
            !text.contains("sutazai_pressure_some_avg10_ratio{"),
            "{text}"
        );
        assert!(
            text.contains("sutazai_pressure_some_stall_seconds_total{resource=\"cpu\"} 5.0\n"),
            "{text}"
        );
        // Escaped label values, one series for the two identical agents.
        assert!(text.contains("name=\"we\\\"ird\\nname\\\\\""), "{text}");
        assert!(text.contains("device=\"sd\\\"a\\\\\\nb\""), "{text}");
        assert_eq!(text.matches("sutazai_agent_up{").count(), 1, "{text}");
        assert!(text.contains(",class=\"\",priority=\"\"} 0\n"), "{text}");
        // Memory above i64::MAX is no figure; the sampler total stays a (huge) counter.
        assert!(!text.contains("sutazai_agent_memory_bytes{"), "{text}");
        assert!(!text.contains("sutazai_sampler_rounds_total{"), "{text}");
        assert!(
            text.contains("sutazai_sampler_cpu_seconds_total{sampler=\"cpu\"} "),
            "{text}"
        );
        // No line is a half-written sample.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.rsplit_once(' ').is_some(),
                "{line}"
            );
        }
    }

    #[test]
    fn empty_snapshot_renders_without_unknown_figures() {
        let text = render(&Snapshot::default());
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("sutazai_memory_total_bytes"), "{text}");
        assert!(!text.contains("sutazai_host_cpu_busy_ratio"), "{text}");
        assert!(
            text.contains("sutazai_engine_mode{mode=\"conservative\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sutazai_docker_up 0\n"), "{text}");
        // No balancer: says so, and no balancer figure is invented.
        assert!(text.contains("sutazai_balancer_enabled 0\n"), "{text}");
        assert!(!text.contains("sutazai_balancer_requests"), "{text}");
    }
}
