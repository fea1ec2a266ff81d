//! Container knobs through Docker's update API: cpuset CPUs and memory nodes, CPU shares,
//! CPU quota (NanoCpus) and memory limit.
//!
//! Values are read from `docker inspect` (HostConfig) and written with `docker update`, one
//! field per call, so Docker's own record and the kernel's cgroup stay in agreement and a
//! restarted container keeps (or, after undo, no longer has) the change.
//!
//! Threading: the [`Actuator`] trait is synchronous and bollard is async, so this actuator
//! owns a small current-thread tokio runtime and blocks on it. It must be called from a plain
//! thread (the CLI, a worker thread), never from inside a tokio runtime: that is reported as
//! an `Io` error rather than a panic. The runtime and the connection are created on first
//! use, so building one without a Docker daemon costs nothing and a dead daemon surfaces as
//! an `Io` error naming the endpoint. Every API call has a 10 s timeout.
//!
//! Docker (at least through 20.10, moby#22516, docker/for-linux#558, moby#41946) ignores a
//! zero or empty value in an update, so "no limit" cannot be written literally. It is written
//! as what the kernel already means by it, and read back as "no limit":
//! - cpuset "" (every CPU/node) is written as the host's online list ("0-1");
//! - quota "max" is written as every online CPU (a quota of N cores on N cores never binds);
//! - memory "max" is written as the kernel's unlimited value (9223372036854771712, what
//!   cgroup v1 memory.limit_in_bytes shows for no limit), with unlimited swap;
//! - shares: Docker's 0 means the kernel default 1024, and is read as "1024".
//!
//! After such an undo the cgroup holds the original value, while `docker inspect` shows the
//! equivalent above instead of 0 or "".

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerUpdateBody, HostConfig};

use super::{Actuator, invalid, knob_name, unsupported};
use crate::containers::docker::{connect, effective_endpoint};
use crate::host::{HostRoots, format_cpu_list, parse_cpu_list, read_optional};
use crate::model::{Change, Knob, Target};
use crate::optimizer::change::ActuatorError;

/// How long one Docker call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// What cgroup v1 reports as "no memory limit" (PAGE_COUNTER_MAX pages of 4 KiB); Docker
/// accepts it as a limit, so it is how "max" is written.
pub const UNLIMITED_MEMORY: i64 = 9_223_372_036_854_771_712;
const NANOS_PER_CORE: i64 = 1_000_000_000;
/// Docker refuses a quota below 0.01 cores (and the kernel one below 1 ms per period).
const MIN_NANO_CPUS: i64 = 10_000_000;
/// Kernel bounds of cpu.shares.
const SHARES_RANGE: std::ops::RangeInclusive<i64> = 2..=262_144;
/// What the kernel (and Docker, for a container created without --cpu-shares) uses.
const DEFAULT_SHARES: i64 = 1024;
/// Docker's default CFS period when a quota was set with --cpu-quota alone.
const DEFAULT_CPU_PERIOD: i64 = 100_000;

/// The container knobs, reached through the Docker daemon at `endpoint`.
pub struct ContainerActuator {
    endpoint: String,
    /// Where the online CPUs and memory nodes are read (what "every CPU" means).
    roots: HostRoots,
    /// Created on first use; dropped after a transport error so the next call reconnects.
    client: Mutex<Option<Client>>,
}

struct Client {
    runtime: tokio::runtime::Runtime,
    docker: Docker,
}

impl std::fmt::Debug for ContainerActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerActuator")
            .field("endpoint", &self.endpoint)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl ContainerActuator {
    /// An actuator for the daemon at `endpoint` ("" = DOCKER_HOST, else the local socket).
    /// Nothing is contacted until the first read or write.
    pub fn new(endpoint: &str, roots: HostRoots) -> Self {
        ContainerActuator {
            endpoint: effective_endpoint(endpoint),
            roots,
            client: Mutex::new(None),
        }
    }

    /// Run one Docker call to completion on the actuator's runtime, connecting first if
    /// needed. `what` names the call for messages.
    fn call<T, F, Fut>(&self, what: &str, make: F) -> Result<T, ActuatorError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ActuatorError::Io(
                "the container actuator blocks; call it from a plain thread, not inside a tokio runtime"
                    .to_string(),
            ));
        }
        let mut guard = self
            .client
            .lock()
            .map_err(|_| ActuatorError::Io("container actuator lock poisoned".to_string()))?;
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        let Some(client) = guard.as_ref() else {
            return Err(ActuatorError::Io("no Docker client".to_string()));
        };
        let future = make(client.docker.clone());
        let outcome = client
            .runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, future).await });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let mapped = self.docker_error(what, err);
                if matches!(mapped, ActuatorError::Io(_)) {
                    // A transport failure: reconnect next time rather than reuse it.
                    *guard = None;
                }
                Err(mapped)
            }
            Err(_) => {
                *guard = None;
                Err(ActuatorError::Io(format!(
                    "Docker at {}: {what}: no answer within {} s",
                    self.endpoint,
                    CALL_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn connect(&self) -> Result<Client, ActuatorError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| ActuatorError::Io(format!("tokio runtime: {err}")))?;
        let connected = runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, connect(&self.endpoint)).await });
        match connected {
            Ok(Ok((docker, _version))) => Ok(Client { runtime, docker }),
            Ok(Err(err)) => Err(ActuatorError::Io(format!(
                "cannot reach Docker at {}: {err}",
                self.endpoint
            ))),
            Err(_) => Err(ActuatorError::Io(format!(
                "cannot reach Docker at {}: no answer within {} s",
                self.endpoint,
                CALL_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Docker's refusals keep Docker's message: 404 is a removed container, 400/409 a value
    /// Docker will not take, 403 a denial; anything else (transport, 500) is `Io`.
    fn docker_error(&self, what: &str, err: bollard::errors::Error) -> ActuatorError {
        match err {
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => match status_code {
                404 => ActuatorError::Gone(format!("{what}: {message}")),
                400 | 409 => ActuatorError::InvalidValue {
                    knob: what.to_string(),
                    value: String::new(),
                    why: format!("Docker refused: {message}"),
                },
                401 | 403 => ActuatorError::Denied(format!("{what}: {message}")),
                _ => ActuatorError::Io(format!("{what}: Docker answered {status_code}: {message}")),
            },
            other => ActuatorError::Io(format!("Docker at {}: {what}: {other}", self.endpoint)),
        }
    }

    fn inspect(&self, id: &str) -> Result<HostConfig, ActuatorError> {
        let id_owned = id.to_string();
        let inspect = self.call("inspect", move |docker| async move {
            docker.inspect_container(&id_owned, None).await
        })?;
        inspect
            .host_config
            .ok_or_else(|| ActuatorError::Io(format!("inspect of {id} has no HostConfig")))
    }

    fn update(&self, id: &str, body: ContainerUpdateBody) -> Result<(), ActuatorError> {
        let id_owned = id.to_string();
        self.call("update", move |docker| async move {
            docker.update_container(&id_owned, body).await
        })
    }

    fn online_cpus(&self) -> Vec<u32> {
        let path = self.roots.sys.join("devices/system/cpu/online");
        read_optional(&path)
            .map(|text| parse_cpu_list(&text))
            .unwrap_or_default()
    }

    /// Memory nodes online; a kernel without NUMA has no node directory and one node, 0.
    fn online_nodes(&self) -> Vec<u32> {
        let path = self.roots.sys.join("devices/system/node/online");
        match read_optional(&path).map(|text| parse_cpu_list(&text)) {
            Some(nodes) if !nodes.is_empty() => nodes,
            _ => vec![0],
        }
    }

    /// NanoCpus of every online CPU: the quota that never binds, which is how "max" is
    /// written. `None` when the online CPUs cannot be read.
    fn all_cores_nanos(&self) -> Option<i64> {
        let cores = i64::try_from(self.online_cpus().len()).ok()?;
        (cores > 0).then(|| cores.saturating_mul(NANOS_PER_CORE))
    }

    /// The same value in one spelling, with "every CPU" and "no limit" resolved against this
    /// host, so "0,1" == "0-1" == "" on two CPUs and "1.50" == "1.5".
    pub fn canonical(&self, knob: &Knob, value: &str) -> Option<String> {
        Some(match knob {
            Knob::ContainerCpusetCpus => format_cpu_list(
                &parse_id_list(value)
                    .ok()?
                    .unwrap_or_else(|| self.online_cpus()),
            ),
            Knob::ContainerCpusetMems => format_cpu_list(
                &parse_id_list(value)
                    .ok()?
                    .unwrap_or_else(|| self.online_nodes()),
            ),
            Knob::ContainerCpuShares => parse_shares(value).ok()?.to_string(),
            Knob::ContainerCpuQuota => match parse_cores(value).ok()? {
                // Unknown online CPUs: no quota is taken for "max" but "max" itself.
                Some(nanos) if nanos < self.all_cores_nanos().unwrap_or(i64::MAX) => {
                    format_cores(nanos)
                }
                _ => "max".to_string(),
            },
            Knob::ContainerMemoryLimit => match parse_bytes(value).ok()? {
                Some(bytes) if bytes < UNLIMITED_MEMORY => bytes.to_string(),
                _ => "max".to_string(),
            },
            _ => return None,
        })
    }
}

fn container_id(target: &Target) -> Option<&str> {
    match target {
        Target::Container { id } => Some(id),
        _ => None,
    }
}

pub(super) fn is_container_knob(knob: &Knob) -> bool {
    matches!(
        knob,
        Knob::ContainerCpusetCpus
            | Knob::ContainerCpusetMems
            | Knob::ContainerCpuShares
            | Knob::ContainerCpuQuota
            | Knob::ContainerMemoryLimit
    )
}

impl Actuator for ContainerActuator {
    fn read(&self, target: &Target, knob: &Knob) -> Result<String, ActuatorError> {
        let Some(id) = container_id(target).filter(|_| is_container_knob(knob)) else {
            return Err(unsupported(target, knob));
        };
        let host = self.inspect(id)?;
        Ok(value_from_host_config(knob, &host))
    }

    fn write(&self, target: &Target, knob: &Knob, value: &str) -> Result<(), ActuatorError> {
        let Some(id) = container_id(target).filter(|_| is_container_knob(knob)) else {
            return Err(unsupported(target, knob));
        };
        let bad = |why: String| invalid(knob, value, why);
        let body = match knob {
            Knob::ContainerCpusetCpus => ContainerUpdateBody {
                cpuset_cpus: Some(cpuset_to_write(value, self.online_cpus()).map_err(bad)?),
                ..Default::default()
            },
            Knob::ContainerCpusetMems => ContainerUpdateBody {
                cpuset_mems: Some(cpuset_to_write(value, self.online_nodes()).map_err(bad)?),
                ..Default::default()
            },
            Knob::ContainerCpuShares => ContainerUpdateBody {
                cpu_shares: Some(parse_shares(value).map_err(bad)?),
                ..Default::default()
            },
            Knob::ContainerCpuQuota => {
                let nanos = match parse_cores(value).map_err(bad)? {
                    Some(nanos) => nanos,
                    None => self.all_cores_nanos().ok_or_else(|| {
                        ActuatorError::Io(
                            "cannot tell how many CPUs are online, so \"max\" cannot be written"
                                .to_string(),
                        )
                    })?,
                };
                ContainerUpdateBody {
                    nano_cpus: Some(nanos),
                    ..Default::default()
                }
            }
            Knob::ContainerMemoryLimit => {
                let limit = parse_bytes(value).map_err(bad)?;
                self.memory_body(id, limit)?
            }
            _ => return Err(unsupported(target, knob)),
        };
        self.update(id, body)
            .map_err(|err| with_value(err, knob, value))
    }

    fn same_value(&self, knob: &Knob, wrote: &str, read: &str) -> bool {
        match (self.canonical(knob, wrote), self.canonical(knob, read)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

impl ContainerActuator {
    /// The update for a memory limit. Docker refuses a limit above the swap limit unless
    /// both change together: where swap is not limited (or there is no limit yet) it stays
    /// unlimited; where it is, Docker's check is left to speak.
    fn memory_body(
        &self,
        id: &str,
        limit: Option<i64>,
    ) -> Result<ContainerUpdateBody, ActuatorError> {
        let host = self.inspect(id)?;
        let swap_unlimited = host.memory_swap.unwrap_or(0) <= 0;
        Ok(ContainerUpdateBody {
            memory: Some(limit.unwrap_or(UNLIMITED_MEMORY)),
            memory_swap: (swap_unlimited || limit.is_none()).then_some(-1),
            ..Default::default()
        })
    }
}

/// Docker's refusal names the call; the operator wants the knob and value too.
fn with_value(err: ActuatorError, knob: &Knob, value: &str) -> ActuatorError {
    match err {
        ActuatorError::InvalidValue { why, .. } => invalid(knob, value, why),
        other => other,
    }
}

/// The knob's value as HostConfig records it, in the notation `write` accepts.
fn value_from_host_config(knob: &Knob, host: &HostConfig) -> String {
    match knob {
        Knob::ContainerCpusetCpus => cpuset_as_read(host.cpuset_cpus.as_deref()),
        Knob::ContainerCpusetMems => cpuset_as_read(host.cpuset_mems.as_deref()),
        Knob::ContainerCpuShares => match host.cpu_shares {
            Some(shares) if shares > 0 => shares.to_string(),
            _ => DEFAULT_SHARES.to_string(),
        },
        Knob::ContainerCpuQuota => quota_as_read(host),
        Knob::ContainerMemoryLimit => match host.memory {
            Some(bytes) if bytes > 0 && bytes < UNLIMITED_MEMORY => bytes.to_string(),
            _ => "max".to_string(),
        },
        _ => String::new(),
    }
}

fn cpuset_as_read(raw: Option<&str>) -> String {
    let raw = raw.unwrap_or("").trim();
    if raw.is_empty() {
        return String::new();
    }
    match parse_id_list(raw) {
        Ok(Some(ids)) => format_cpu_list(&ids),
        // Never seen from Docker; kept verbatim so a write of it fails loudly.
        _ => raw.to_string(),
    }
}

/// NanoCpus when set; else a quota set with --cpu-quota/--cpu-period, as cores.
fn quota_as_read(host: &HostConfig) -> String {
    if let Some(nanos) = host.nano_cpus.filter(|n| *n > 0) {
        return format_cores(nanos);
    }
    match host.cpu_quota.filter(|q| *q > 0) {
        Some(quota) => {
            let period = host
                .cpu_period
                .filter(|p| *p > 0)
                .unwrap_or(DEFAULT_CPU_PERIOD);
            let nanos = i128::from(quota) * i128::from(NANOS_PER_CORE) / i128::from(period);
            format_cores(i64::try_from(nanos).unwrap_or(i64::MAX))
        }
        None => "max".to_string(),
    }
}

/// The list Docker is sent: the given one in canonical form, or every online id for "".
fn cpuset_to_write(value: &str, online: Vec<u32>) -> Result<String, String> {
    match parse_id_list(value)? {
        Some(ids) => Ok(format_cpu_list(&ids)),
        None if online.is_empty() => Err("cannot tell which CPUs or nodes are online".to_string()),
        None => Ok(format_cpu_list(&online)),
    }
}

pub use crate::host::parse_id_list;

/// CPU shares, within the kernel's bounds.
pub fn parse_shares(value: &str) -> Result<i64, String> {
    let shares: i64 = value
        .trim()
        .parse()
        .map_err(|_| "not a whole number".to_string())?;
    if SHARES_RANGE.contains(&shares) {
        Ok(shares)
    } else {
        Err(format!(
            "out of {}..={}",
            SHARES_RANGE.start(),
            SHARES_RANGE.end()
        ))
    }
}

/// Cores as a decimal ("1.5", up to 9 decimals) to NanoCpus; "max" is `None`.
pub fn parse_cores(value: &str) -> Result<Option<i64>, String> {
    let value = value.trim();
    if value == "max" {
        return Ok(None);
    }
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits_only = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !digits_only(whole)
        || !digits_only(fraction)
        || fraction.len() > 9
    {
        return Err("expected cores as a decimal (\"1.5\") or \"max\"".to_string());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| "too large".to_string())?
    };
    let fraction_nanos: i64 = if fraction.is_empty() {
        0
    } else {
        let padded = format!("{fraction:0<9}");
        padded.parse().map_err(|_| "bad fraction".to_string())?
    };
    let nanos = whole
        .checked_mul(NANOS_PER_CORE)
        .and_then(|n| n.checked_add(fraction_nanos))
        .ok_or_else(|| "too large".to_string())?;
    if nanos < MIN_NANO_CPUS {
        return Err("below 0.01 cores, the least Docker accepts".to_string());
    }
    Ok(Some(nanos))
}

/// NanoCpus as cores, without trailing zeros: 1500000000 -> "1.5".
pub fn format_cores(nanos: i64) -> String {
    let whole = nanos / NANOS_PER_CORE;
    let fraction = nanos % NANOS_PER_CORE;
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:09}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// Bytes, optionally with a binary k/m/g suffix ("64m"); "max" is `None`.
pub fn parse_bytes(value: &str) -> Result<Option<i64>, String> {
    let value = value.trim();
    if value == "max" {
        return Ok(None);
    }
    let lower = value.to_ascii_lowercase();
    let suffixed = [("k", 1i64 << 10), ("m", 1 << 20), ("g", 1 << 30)]
        .into_iter()
        .find_map(|(suffix, unit)| lower.strip_suffix(suffix).map(|digits| (digits, unit)));
    let (digits, unit) = suffixed.unwrap_or((lower.as_str(), 1));
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("expected bytes (\"67108864\" or \"64m\") or \"max\"".to_string());
    }
    let bytes = digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| "too large".to_string())?;
    if bytes == 0 {
        return Err("0 is not a limit; use \"max\" for none".to_string());
    }
    Ok(Some(bytes))
}

/// One change for a container knob, with `before` read through Docker and `after`
/// validated and stored in canonical form ("64m" becomes "67108864", "1.50" becomes "1.5").
pub fn plan_container(id: &str, knob: Knob, after: &str) -> Result<Change, ActuatorError> {
    plan_container_with(
        &ContainerActuator::new("", HostRoots::default()),
        id,
        knob,
        after,
    )
}

/// [`plan_container`] through a given actuator (its endpoint and roots).
pub fn plan_container_with(
    actuator: &ContainerActuator,
    id: &str,
    knob: Knob,
    after: &str,
) -> Result<Change, ActuatorError> {
    if !is_container_knob(&knob) {
        return Err(ActuatorError::Unsupported(format!(
            "{} is not a container knob",
            knob_name(&knob)
        )));
    }
    let after = written_form(&knob, after).map_err(|why| invalid(&knob, after, why))?;
    let target = Target::Container { id: id.to_string() };
    let before = actuator.read(&target, &knob)?;
    Ok(Change {
        target,
        knob,
        before,
        after,
    })
}

/// `value` validated and spelled the way `read` spells it, host-independent ("" and "max"
/// stay as they are).
pub fn written_form(knob: &Knob, value: &str) -> Result<String, String> {
    match knob {
        Knob::ContainerCpusetCpus | Knob::ContainerCpusetMems => Ok(parse_id_list(value)?
            .map(|ids| format_cpu_list(&ids))
            .unwrap_or_default()),
        Knob::ContainerCpuShares => parse_shares(value).map(|s| s.to_string()),
        Knob::ContainerCpuQuota => Ok(parse_cores(value)?
            .map(format_cores)
            .unwrap_or_else(|| "max".to_string())),
        Knob::ContainerMemoryLimit => Ok(parse_bytes(value)?
            .map(|b| b.to_string())
            .unwrap_or_else(|| "max".to_string())),
        _ => Err("not a container knob".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_two_cpus() -> (tempfile::TempDir, ContainerActuator) {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("sys/devices/system/cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("online"), "0-1\n").unwrap();
        let roots = HostRoots::under(dir.path());
        let actuator = ContainerActuator::new("unix:///nonexistent/docker.sock", roots);
        (dir, actuator)
    }

    #[test]
    fn cores_parse_exactly() {
        assert_eq!(parse_cores("1.5"), Ok(Some(1_500_000_000)));
        assert_eq!(parse_cores("1.50"), Ok(Some(1_500_000_000)));
        assert_eq!(parse_cores("0.01"), Ok(Some(10_000_000)));
        assert_eq!(parse_cores(".5"), Ok(Some(500_000_000)));
        assert_eq!(parse_cores("2"), Ok(Some(2_000_000_000)));
        assert_eq!(parse_cores("max"), Ok(None));
        for bad in [
            "",
            ".",
            "0.009",
            "0",
            "-1",
            "1.5x",
            "1e3",
            "0.0000000001",
            "1.2.3",
        ] {
            assert!(parse_cores(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(format_cores(1_500_000_000), "1.5");
        assert_eq!(format_cores(10_000_000), "0.01");
        assert_eq!(format_cores(3_000_000_000), "3");
    }

    #[test]
    fn bytes_parse_with_suffixes() {
        assert_eq!(parse_bytes("67108864"), Ok(Some(67_108_864)));
        assert_eq!(parse_bytes("64m"), Ok(Some(67_108_864)));
        assert_eq!(parse_bytes("64M"), Ok(Some(67_108_864)));
        assert_eq!(parse_bytes("1k"), Ok(Some(1024)));
        assert_eq!(parse_bytes("2g"), Ok(Some(2 << 30)));
        assert_eq!(parse_bytes("max"), Ok(None));
        for bad in ["", "m", "0", "-5", "1.5m", "64mb", "99999999999999999999"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shares_and_lists_are_strict() {
        assert_eq!(parse_shares("512"), Ok(512));
        for bad in ["1", "262145", "x", ""] {
            assert!(parse_shares(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_id_list("1,0"), Ok(Some(vec![1, 0])));
        assert_eq!(parse_id_list(""), Ok(None));
        for bad in ["0-x", "1,,2", "3-1", "a", "0--1"] {
            assert!(parse_id_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn written_forms_are_canonical() {
        let cases = [
            (Knob::ContainerCpusetCpus, "1,0", "0-1"),
            (Knob::ContainerCpusetCpus, "", ""),
            (Knob::ContainerCpuQuota, "1.50", "1.5"),
            (Knob::ContainerCpuQuota, "max", "max"),
            (Knob::ContainerMemoryLimit, "64m", "67108864"),
            (Knob::ContainerCpuShares, " 512 ", "512"),
        ];
        for (knob, value, expected) in cases {
            assert_eq!(
                written_form(&knob, value).as_deref(),
                Ok(expected),
                "{knob:?} {value:?}"
            );
        }
        assert!(written_form(&Knob::Nice, "5").is_err());
    }

    #[test]
    fn same_value_resolves_all_and_unlimited() {
        let (_dir, actuator) = on_two_cpus();
        let same = |knob: Knob, a: &str, b: &str| actuator.same_value(&knob, a, b);
        assert!(same(Knob::ContainerCpusetCpus, "0,1", "0-1"));
        assert!(same(Knob::ContainerCpusetCpus, "", "0-1"));
        assert!(!same(Knob::ContainerCpusetCpus, "", "0"));
        assert!(same(Knob::ContainerCpuQuota, "1.50", "1.5"));
        assert!(!same(Knob::ContainerCpuQuota, "0.5", "0.05"));
        // A quota of every CPU never binds: it is how "max" is written.
        assert!(same(Knob::ContainerCpuQuota, "max", "2"));
        assert!(same(Knob::ContainerMemoryLimit, "64m", "67108864"));
        assert!(same(
            Knob::ContainerMemoryLimit,
            "max",
            &UNLIMITED_MEMORY.to_string()
        ));
        assert!(!same(Knob::ContainerMemoryLimit, "max", "67108864"));
        assert!(!same(Knob::ContainerCpuShares, "512", "bogus"));
    }

    #[test]
    fn unknown_online_cpus_never_make_quotas_equal() {
        let dir = tempfile::tempdir().unwrap();
        let actuator = ContainerActuator::new(
            "unix:///nonexistent/docker.sock",
            HostRoots::under(dir.path()),
        );
        assert!(!actuator.same_value(&Knob::ContainerCpuQuota, "0.5", "1.5"));
        assert!(!actuator.same_value(&Knob::ContainerCpuQuota, "max", "2"));
        assert!(actuator.same_value(&Knob::ContainerCpuQuota, "max", "max"));
        let target = Target::Container {
            id: "abc".to_string(),
        };
        let err = actuator
            .write(&target, &Knob::ContainerCpuQuota, "max")
            .unwrap_err();
        assert!(
            matches!(err, ActuatorError::Io(ref m) if m.contains("online")),
            "{err}"
        );
    }

    #[test]
    fn host_config_reads() {
        let host = HostConfig {
            cpuset_cpus: Some(String::new()),
            cpuset_mems: Some("0".to_string()),
            cpu_shares: Some(0),
            nano_cpus: Some(0),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory: Some(0),
            ..Default::default()
        };
        assert_eq!(
            value_from_host_config(&Knob::ContainerCpusetCpus, &host),
            ""
        );
        assert_eq!(
            value_from_host_config(&Knob::ContainerCpusetMems, &host),
            "0"
        );
        assert_eq!(
            value_from_host_config(&Knob::ContainerCpuShares, &host),
            "1024"
        );
        assert_eq!(
            value_from_host_config(&Knob::ContainerCpuQuota, &host),
            "0.5"
        );
        assert_eq!(
            value_from_host_config(&Knob::ContainerMemoryLimit, &host),
            "max"
        );
        let limited = HostConfig {
            nano_cpus: Some(1_500_000_000),
            memory: Some(67_108_864),
            ..Default::default()
        };
        assert_eq!(
            value_from_host_config(&Knob::ContainerCpuQuota, &limited),
            "1.5"
        );
        assert_eq!(
            value_from_host_config(&Knob::ContainerMemoryLimit, &limited),
            "67108864"
        );
        let unlimited = HostConfig {
            memory: Some(UNLIMITED_MEMORY),
            ..Default::default()
        };
        assert_eq!(
            value_from_host_config(&Knob::ContainerMemoryLimit, &unlimited),
            "max"
        );
    }

    #[test]
    fn invalid_values_never_reach_docker() {
        // The endpoint does not exist: an error other than InvalidValue would mean a call.
        let (_dir, actuator) = on_two_cpus();
        let target = Target::Container {
            id: "abc".to_string(),
        };
        for (knob, value) in [
            (Knob::ContainerCpuQuota, "0.001"),
            (Knob::ContainerMemoryLimit, "lots"),
            (Knob::ContainerCpusetCpus, "0-"),
            (Knob::ContainerCpuShares, "1"),
        ] {
            let err = actuator.write(&target, &knob, value).unwrap_err();
            assert!(
                matches!(err, ActuatorError::InvalidValue { .. }),
                "{knob:?} {value:?}: {err}"
            );
        }
    }

    #[test]
    fn dead_daemon_is_io_with_endpoint() {
        let (_dir, actuator) = on_two_cpus();
        let target = Target::Container {
            id: "abc".to_string(),
        };
        let err = actuator
            .read(&target, &Knob::ContainerCpuShares)
            .unwrap_err();
        match err {
            ActuatorError::Io(message) => {
                assert!(message.contains("/nonexistent/docker.sock"), "{message}")
            }
            other => panic!("expected Io, got {other}"),
        }
    }

    #[test]
    fn wrong_target_or_knob_is_unsupported() {
        let (_dir, actuator) = on_two_cpus();
        let err = actuator
            .read(&Target::Host, &Knob::ContainerCpuShares)
            .unwrap_err();
        assert!(matches!(err, ActuatorError::Unsupported(_)), "{err}");
        let target = Target::Container {
            id: "abc".to_string(),
        };
        let err = actuator.read(&target, &Knob::Nice).unwrap_err();
        assert!(matches!(err, ActuatorError::Unsupported(_)), "{err}");
    }
}
