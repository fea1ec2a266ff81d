//! Docker containers: discovery through bollard, usage from each container's cgroup files.
//!
//! One task owns the Docker connection. It lists containers on connect, on every membership
//! event and every `RELIST_EVERY` ticks (in case an event was missed), finds each running
//! container's cgroup from its main pid's /proc/<pid>/cgroup (never a guessed path, so the
//! cgroupfs and systemd drivers, v1 and v2 all work), and every tick reads the counters.
//! A dead daemon is a status on the snapshot and a reconnect with backoff, never a crash.
//! The same sampler follows the agents that are plain processes (`[[agents]]`, see
//! `process_agents`), with Docker or without it.

pub mod agent;
pub mod backends;
pub mod config;
pub mod docker;
pub mod process_agents;
pub mod usage;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::host::cgroup_files::CgroupReader;
use crate::host::cgroups::{self, CgroupCounters, CgroupMounts};
use crate::host::health::{HealthBoard, thread_cpu_time};
use crate::host::schedstat::{self, RunDelayTracker, TaskTimes};
use crate::host::{HostError, HostRoots};
use crate::model::RunDelay;
use crate::model::{
    AgentClass, ContainerStat, ContainersSnapshot, DockerStatus, ProcessAgent, UsageSource,
    is_process_agent,
};
pub use config::{AgentEntry, DockerConfig};

use agent::AgentRule;
use docker::Listed;
use usage::UsageTracker;

/// Ticks between full re-lists when no event arrived.
const RELIST_EVERY: u64 = 10;
/// Longest wait between reconnection attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Stats API calls in flight at once when cgroups cannot be read.
const FALLBACK_CONCURRENCY: usize = 8;
/// Ticks before a container whose stats fallback failed is asked again.
const FALLBACK_PAUSE: u32 = 10;
/// Name of this sampler on the health board.
pub const SAMPLER_NAME: &str = "containers";

/// One container being followed.
#[derive(Debug)]
struct Tracked {
    listed: Listed,
    pid: Option<i32>,
    /// The container's cgroup files, resolved from its main pid once and kept open.
    reader: Option<CgroupReader>,
    usage: UsageTracker,
    source: UsageSource,
    /// Bytes per NUMA node from memory.numa_stat (re-read every `LIMITS_MAX_AGE`).
    numa_memory_bytes: Vec<u64>,
    /// Run-queue delay of its tasks (latency agents only).
    run_delay: RunDelayTracker,
    last_run_delay: Option<RunDelay>,
    /// After a failed stats fallback: no new attempt before this instant.
    fallback_paused_until: Option<Instant>,
    /// Set for an agent that is plain processes (`[[agents]]`).
    process: Option<ProcessAgent>,
    /// A process agent whose cgroup holds others: usage summed from /proc instead.
    usage_from_procfs: bool,
    /// What KSM merges for its processes, as last read.
    ksm: Option<crate::model::AgentKsm>,
}

impl Tracked {
    fn new(listed: Listed) -> Tracked {
        Tracked {
            listed,
            pid: None,
            reader: None,
            usage: UsageTracker::default(),
            source: UsageSource::None,
            numa_memory_bytes: Vec::new(),
            run_delay: RunDelayTracker::default(),
            last_run_delay: None,
            fallback_paused_until: None,
            process: None,
            usage_from_procfs: false,
            ksm: None,
        }
    }
}

/// The containers sampler: owns the connection state and every tracked container.
pub struct ContainerSampler {
    endpoint: String,
    rule: AgentRule,
    roots: HostRoots,
    mounts: Arc<CgroupMounts>,
    interval: Duration,
    tracked: HashMap<String, Tracked>,
    total_seen: usize,
    health: HealthBoard,
    docker_enabled: bool,
    /// `[[agents]]`: plain processes that count as agents.
    entries: Vec<AgentEntry>,
    ticks: u64,
    /// A process agent's main process left: list /proc again at the next tick.
    rescan_due: bool,
}

impl ContainerSampler {
    pub fn new(
        config: &DockerConfig,
        entries: &[AgentEntry],
        roots: HostRoots,
        mounts: Arc<CgroupMounts>,
        interval: Duration,
        health: HealthBoard,
    ) -> Self {
        ContainerSampler {
            endpoint: docker::effective_endpoint(&config.endpoint),
            rule: AgentRule {
                label: config.agent_label.clone(),
                all_containers: config.all_containers_are_agents,
            },
            roots,
            mounts,
            interval,
            tracked: HashMap::new(),
            total_seen: 0,
            health,
            docker_enabled: config.enabled,
            entries: entries.to_vec(),
            ticks: 0,
            rescan_due: true,
        }
    }

    /// Run until `shutdown` turns true, publishing on `out`.
    pub async fn run(
        mut self,
        out: watch::Sender<ContainersSnapshot>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if !self.docker_enabled {
            self.without_docker(DockerStatus::Disabled, None, &out, &mut shutdown)
                .await;
            return;
        }
        let mut retry = Duration::from_secs(1);
        loop {
            let failure = match docker::connect(&self.endpoint).await {
                Ok((client, version)) => {
                    tracing::info!(endpoint = %self.endpoint, %version, "connected to Docker");
                    retry = Duration::from_secs(1);
                    let status = DockerStatus::Connected {
                        endpoint: self.endpoint.clone(),
                        version,
                    };
                    match self.follow(&client, status, &out, &mut shutdown).await {
                        None => return, // shut down
                        Some(err) => err,
                    }
                }
                Err(err) => err.to_string(),
            };
            tracing::warn!(endpoint = %self.endpoint, error = %failure, retry_s = retry.as_secs(), "Docker unreachable");
            self.health.failed(SAMPLER_NAME, &failure, retry);
            self.tracked.retain(|id, _| is_process_agent(id));
            self.total_seen = 0;
            let status = DockerStatus::Unreachable {
                endpoint: self.endpoint.clone(),
                error: failure,
                retry_in_ms: retry.as_millis() as u64,
            };
            if self
                .without_docker(status, Some(retry), &out, &mut shutdown)
                .await
            {
                return;
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Without Docker (disabled, or waiting `wait` to reconnect): publish `status`, and keep
    /// following the process agents, if any, tick by tick. True when shut down.
    async fn without_docker(
        &mut self,
        status: DockerStatus,
        wait: Option<Duration>,
        out: &watch::Sender<ContainersSnapshot>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        out.send_replace(self.snapshot(status.clone()));
        let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_deadline);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick(), if !self.entries.is_empty() => {
                    let started = Instant::now();
                    let cpu = self.read_usage(None).await;
                    if !self.docker_enabled {
                        self.health.ok(SAMPLER_NAME, started.elapsed(), cpu, self.interval);
                    }
                    out.send_replace(self.snapshot(status.clone()));
                }
                _ = &mut until_deadline => return false,
                _ = shutdown.changed() => return true,
            }
        }
    }

    /// Follow a connected daemon until it fails (returns the error) or shutdown (None).
    async fn follow(
        &mut self,
        client: &Docker,
        status: DockerStatus,
        out: &watch::Sender<ContainersSnapshot>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<String> {
        let mut events = Box::pin(docker::container_events(client));
        if let Err(err) = self.relist(client).await {
            return Some(err.to_string());
        }
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(RELIST_EVERY)
                        && let Err(err) = self.relist(client).await
                    {
                        return Some(err.to_string());
                    }
                    let started = Instant::now();
                    let cpu = self.read_usage(Some(client)).await;
                    self.health.ok(SAMPLER_NAME, started.elapsed(), cpu, self.interval);
                }
                event = events.next() => {
                    let changed = match docker::take_event_burst(event, &mut events) {
                        Ok(changed) => changed,
                        Err(why) => return Some(why),
                    };
                    if !changed {
                        continue;
                    }
                    if let Err(err) = self.relist(client).await {
                        return Some(err.to_string());
                    }
                }
                _ = shutdown.changed() => return None,
            }
            out.send_replace(self.snapshot(status.clone()));
        }
    }

    /// Refresh the container list; start following new or restarted containers, forget gone
    /// ones.
    async fn relist(&mut self, client: &Docker) -> Result<(), docker::DockerError> {
        let listed = docker::list(client).await?;
        self.total_seen = listed.len();
        // Process agents are not Docker's to list: they stay as they are.
        let process_ids: Vec<String> = self
            .tracked
            .keys()
            .filter(|id| is_process_agent(id))
            .cloned()
            .collect();
        let mut next: HashMap<String, Tracked> = process_ids
            .into_iter()
            .filter_map(|id| self.tracked.remove_entry(&id))
            .collect();
        for item in listed {
            if !self.rule.is_agent(&item.labels) {
                continue;
            }
            let running = item.state == "running";
            let mut tracked = match self.tracked.remove(&item.id) {
                Some(old) if old.listed.state == item.state && (old.pid.is_some() || !running) => {
                    Tracked {
                        listed: item.clone(),
                        ..old
                    }
                }
                _ => Tracked::new(item.clone()),
            };
            if running && tracked.pid.is_none() {
                match docker::main_pid(client, &item.id).await {
                    Ok(pid) => tracked.pid = pid,
                    // Gone between list and inspect: the next event or relist settles it.
                    Err(err) => tracing::debug!(id = %item.id, %err, "inspect failed"),
                }
            }
            // A relist follows an event (maybe `docker update`) or RELIST_EVERY ticks:
            // re-read limits and cpusets now rather than when their readings age out.
            if let Some(reader) = &mut tracked.reader {
                reader.expire_readings();
            }
            next.insert(item.id, tracked);
        }
        self.tracked = next;
        Ok(())
    }

    /// Read every running container's cgroup counters (off the async threads), falling back
    /// to the stats API for a container whose cgroup cannot be read. Returns the CPU time the
    /// file reading cost.
    async fn read_usage(&mut self, client: Option<&Docker>) -> Duration {
        self.ticks += 1;
        let rescan = !self.entries.is_empty()
            && (self.rescan_due || self.ticks.is_multiple_of(process_agents::RESCAN_EVERY));
        let found = if rescan {
            let (roots, mounts, entries) = (
                self.roots.clone(),
                self.mounts.clone(),
                self.entries.clone(),
            );
            let scanned = tokio::task::spawn_blocking(move || {
                let cpu_before = thread_cpu_time();
                let found = process_agents::scan(&roots, &mounts, &entries);
                (found, thread_cpu_time().saturating_sub(cpu_before))
            })
            .await;
            match scanned {
                Ok(found) => Some(found),
                Err(err) => {
                    tracing::error!(%err, "listing processes failed");
                    None
                }
            }
        } else {
            None
        };
        let mut scan_cpu = Duration::ZERO;
        if let Some((found, cpu)) = found {
            scan_cpu = cpu;
            self.rescan_due = false;
            for item in found {
                self.follow_process_agent(item);
            }
        }
        // The kept files travel to the blocking pool and back with each work item.
        let read_ksm = self.ticks % KSM_EVERY == 1;
        let work: Vec<Work> = self
            .tracked
            .iter_mut()
            .filter_map(|(id, t)| {
                t.pid.map(|pid| Work {
                    id: id.clone(),
                    pid,
                    procfs_pids: t
                        .process
                        .as_ref()
                        .filter(|_| t.usage_from_procfs)
                        .map(|p| p.pids.clone()),
                    cpus_by_affinity: t.process.as_ref().is_some_and(|p| !p.own_cpuset()),
                    latency: agent::class_of(&t.listed.labels) == Some(AgentClass::Latency),
                    reader: t.reader.take(),
                    result: None,
                    numa_memory_bytes: Vec::new(),
                    tasks: None,
                    read_ksm,
                    ksm: None,
                })
            })
            .collect();
        let roots = self.roots.clone();
        let mounts = self.mounts.clone();
        let done = tokio::task::spawn_blocking(move || {
            let cpu_before = thread_cpu_time();
            let done = read_all(&roots, &mounts, work);
            (done, thread_cpu_time().saturating_sub(cpu_before))
        })
        .await;
        let (done, cpu) = match done {
            Ok(done) => done,
            Err(err) => {
                tracing::error!(%err, "cgroup reading task failed");
                return scan_cpu;
            }
        };
        let now = Instant::now();
        let fallbacks = match client {
            Some(client) => self.fallback_readings(client, &done, now).await,
            None => HashMap::new(),
        };
        for item in done {
            let counters = match item.result {
                Some(Ok(counters)) => Some(counters),
                _ => fallbacks.get(&item.id).cloned(),
            };
            if let Some(tracked) = self.tracked.get_mut(&item.id) {
                tracked.reader = item.reader;
                tracked.numa_memory_bytes = item.numa_memory_bytes;
                if item.read_ksm {
                    tracked.ksm = item.ksm;
                }
                tracked.last_run_delay = item
                    .tasks
                    .and_then(|tasks| tracked.run_delay.update(now, tasks));
                match counters {
                    Some(counters) => {
                        tracked.source = counters.source;
                        tracked.usage.update(now, counters);
                    }
                    // A process agent's main process left: match again at once.
                    None if tracked.process.is_some() => self.rescan_due = true,
                    None => {}
                }
            }
        }
        cpu + scan_cpu
    }

    /// Take one entry's latest match: a new main process (or a move between cgroups) means
    /// a new reader, as a restarted container does.
    fn follow_process_agent(&mut self, found: process_agents::Found) {
        let id = found.listed.id.clone();
        let mut tracked = match self.tracked.remove(&id) {
            Some(old)
                if old.pid == found.main
                    && old.process.as_ref().map(|p| &p.cgroups) == Some(&found.process.cgroups) =>
            {
                old
            }
            _ => Tracked::new(found.listed.clone()),
        };
        tracked.listed = found.listed;
        tracked.pid = found.main;
        tracked.usage_from_procfs = !found.own_usage_cgroup;
        tracked.process = Some(found.process);
        self.tracked.insert(id, tracked);
    }

    /// Docker's stats for the containers whose cgroup could not be read, a few calls at a
    /// time. A container whose fallback failed is not asked again for `FALLBACK_PAUSE` ticks,
    /// so a daemon that cannot answer never stalls the sampler tick after tick.
    async fn fallback_readings(
        &mut self,
        client: &Docker,
        done: &[Work],
        now: Instant,
    ) -> HashMap<String, CgroupCounters> {
        let due: Vec<String> = done
            .iter()
            .filter(|item| matches!(item.result, Some(Err(_))) && !is_process_agent(&item.id))
            .filter(|item| {
                self.tracked
                    .get(&item.id)
                    .is_none_or(|t| t.fallback_paused_until.is_none_or(|until| now >= until))
            })
            .map(|item| item.id.clone())
            .collect();
        if due.is_empty() {
            return HashMap::new();
        }
        tracing::debug!(
            containers = due.len(),
            "cgroups unreadable, asking Docker for stats"
        );
        let answers: Vec<(String, Result<CgroupCounters, docker::DockerError>)> =
            futures_util::stream::iter(due)
                .map(|id| async move {
                    let result = docker::stats_counters(client, &id).await;
                    (id, result)
                })
                .buffer_unordered(FALLBACK_CONCURRENCY)
                .collect()
                .await;
        let pause = self.interval * FALLBACK_PAUSE;
        let mut readings = HashMap::new();
        for (id, result) in answers {
            match result {
                Ok(counters) => {
                    readings.insert(id, counters);
                }
                Err(err) => {
                    tracing::debug!(%id, %err, "stats fallback failed");
                    if let Some(t) = self.tracked.get_mut(&id) {
                        t.fallback_paused_until = Some(now + pause);
                    }
                }
            }
        }
        readings
    }

    fn snapshot(&self, status: DockerStatus) -> ContainersSnapshot {
        let mut agents: Vec<ContainerStat> = self.tracked.values().map(container_stat).collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        ContainersSnapshot {
            status,
            agents,
            total_seen: self.total_seen,
            agent_label: self.rule.shown_label(),
        }
    }
}

/// One container's cgroup reading, done on the blocking pool.
struct Work {
    id: String,
    pid: i32,
    /// A process agent whose cgroup holds others: its processes, summed from /proc.
    procfs_pids: Option<Vec<i32>>,
    /// A process agent whose cpuset cgroup holds others: its CPUs are its main process's
    /// affinity (what the coordinator sets), not the cgroup's cpuset.
    cpus_by_affinity: bool,
    /// Latency agents' stall is measured tick by tick (their fixes are validated on it).
    latency: bool,
    reader: Option<CgroupReader>,
    result: Option<Result<CgroupCounters, HostError>>,
    numa_memory_bytes: Vec<u64>,
    /// Latency agents: each task's run and wait times.
    tasks: Option<HashMap<i32, TaskTimes>>,
    /// Read KSM's counters of its processes this round.
    read_ksm: bool,
    ksm: Option<crate::model::AgentKsm>,
}

/// KSM's per-process counters are read every this many rounds (they move slowly: ksmd
/// scans a few hundred pages per wake-up).
const KSM_EVERY: u64 = 5;

/// Resolve (once) and read each container's cgroup. Blocking file I/O.
fn read_all(roots: &HostRoots, mounts: &CgroupMounts, mut work: Vec<Work>) -> Vec<Work> {
    for item in &mut work {
        read_one(roots, mounts, item);
        if item.cpus_by_affinity
            && let Some(Ok(counters)) = &mut item.result
        {
            counters.cpuset_cpus =
                process_agents::allowed_cpus(roots, item.pid).unwrap_or_default();
        }
    }
    work
}

fn read_one(roots: &HostRoots, mounts: &CgroupMounts, item: &mut Work) {
    read_usage_of(roots, mounts, item);
    if item.read_ksm {
        let pids = match (&item.procfs_pids, &item.reader) {
            (Some(pids), _) => pids.clone(),
            (None, Some(reader)) => reader.procs(),
            (None, None) => vec![item.pid],
        };
        item.ksm = crate::host::ksm::read_agent(&roots.proc, &pids);
    }
}

fn read_usage_of(roots: &HostRoots, mounts: &CgroupMounts, item: &mut Work) {
    if let Some(pids) = &item.procfs_pids {
        item.result =
            Some(
                process_agents::procfs_counters(roots, pids).ok_or_else(|| HostError::Parse {
                    path: roots.proc.clone(),
                    what: "none of the agent's processes is left".to_string(),
                }),
            );
        return;
    }
    if item.reader.is_none() {
        let resolved =
            cgroups::read_proc_cgroups(roots, item.pid).and_then(|cg| mounts.reader(&cg));
        match resolved {
            Ok(reader) => item.reader = Some(reader),
            Err(err) => {
                item.result = Some(Err(err));
                return;
            }
        }
    }
    if let Some(reader) = &mut item.reader {
        reader.set_psi_every_read(item.latency);
        item.result = Some(reader.read());
        item.numa_memory_bytes = reader.numa_memory_bytes();
        if item.latency {
            item.tasks = Some(schedstat::task_times(roots, &reader.procs()));
        }
    }
}

fn container_stat(t: &Tracked) -> ContainerStat {
    let listed = &t.listed;
    let class = agent::class_of(&listed.labels);
    let (need, need_error) = match crate::model::need::need_from_labels(
        &listed.labels,
        class == Some(crate::model::AgentClass::Latency),
    ) {
        Ok(need) => (need, None),
        Err(why) => (None, Some(why)),
    };
    let mut stat = ContainerStat {
        id: listed.id.clone(),
        name: listed.name.clone(),
        image: listed.image.clone(),
        state: listed.state.clone(),
        class,
        priority: agent::priority_of(&listed.labels),
        need,
        need_error,
        labels: listed.labels.clone(),
        pid: t.pid,
        source: t.source,
        numa_memory_bytes: t.numa_memory_bytes.clone(),
        run_delay: t.last_run_delay,
        cpu_history: t.usage.cpu_history.clone(),
        process: t.process.clone(),
        ksm: t.ksm,
        ..ContainerStat::default()
    };
    if let Some(c) = t.usage.counters() {
        let rates = t.usage.last;
        stat.cgroup = Some(c.path.clone()).filter(|p| !p.is_empty());
        stat.cpu_pct = rates.cpu_pct;
        stat.mem_bytes = c.memory_usage_bytes.saturating_sub(c.inactive_file_bytes);
        stat.mem_limit_bytes = c.memory_limit_bytes;
        stat.io_read_bytes_per_sec = rates.io_read_bytes_per_sec;
        stat.io_write_bytes_per_sec = rates.io_write_bytes_per_sec;
        stat.pids = c.pids;
        stat.throttled_periods_delta = rates.throttled_periods_delta;
        stat.throttled_periods_total = c.nr_throttled;
        stat.cpu_limit_cores = c.cpu_limit_cores;
        stat.cpu_weight = c.cpu_weight;
        stat.cpuset_cpus = c.cpuset_cpus.clone();
        stat.cpuset_mems = c.cpuset_mems.clone();
        stat.pressure = c.pressure;
    }
    stat
}
