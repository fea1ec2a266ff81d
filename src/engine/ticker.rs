//! The tick: starts the samplers, composes snapshots, answers commands.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::{EngineConfig, ReportWriter};
use super::{Command, EngineHandle, sampler};
use crate::containers::ContainerSampler;
use crate::coordinator::CoordinatorConfig;
use crate::eliminator::Detector;
use crate::eliminator::proposals::ProposalBook;
use crate::eliminator::strategy::{Context as StrategyContext, EliminationStrategy};
use crate::host::cgroups::CgroupMounts;
use crate::host::cpu::CpuSampler;
use crate::host::disks::DiskSampler;
use crate::host::health::HealthBoard;
use crate::host::memory::MemorySampler;
use crate::host::net::NetSampler;
use crate::host::processes::ProcessSampler;
use crate::host::{self, HostError, HostRoots};
use crate::model::Mode;
use crate::model::ProposalStatus;
use crate::model::{
    ChangesSnapshot, ContainersSnapshot, CpuSnapshot, DiskStat, DockerStatus, HostHistory,
    HostInfo, MemorySnapshot, NetStat, Notice, Pressure, ProcessStat, Snapshot, Topology,
};
use crate::optimizer::OptimizerConfig;

mod coordination;
mod fixes;

use fixes::{Job, RollbackOrigin};

/// How often the journal view is refreshed (a rollback from this face refreshes it at once).
const JOURNAL_INTERVAL: Duration = Duration::from_secs(5);

/// The memory sampler's reading: memory plus system pressure (both cheap, same cadence).
#[derive(Debug, Clone, Default)]
struct MemoryReading {
    memory: MemorySnapshot,
    pressure: Pressure,
}

/// Receivers for every sampler's latest reading.
struct Readings {
    cpu: watch::Receiver<Option<CpuSnapshot>>,
    memory: watch::Receiver<Option<MemoryReading>>,
    disks: watch::Receiver<Option<Vec<DiskStat>>>,
    nets: watch::Receiver<Option<Vec<NetStat>>>,
    processes: watch::Receiver<Option<Vec<ProcessStat>>>,
    changes: watch::Receiver<Option<ChangesSnapshot>>,
    containers: watch::Receiver<ContainersSnapshot>,
}

fn latest<T: Clone + Default>(rx: &watch::Receiver<Option<T>>) -> T {
    rx.borrow().clone().unwrap_or_default()
}

/// Start the engine on the current tokio runtime. The returned task ends after
/// `Command::Quit` (or when every handle is dropped), once the samplers have stopped.
pub fn spawn(config: EngineConfig) -> (EngineHandle, JoinHandle<()>) {
    start(config, false)
}

/// Start the engine for a face that owns the host's changes (the dashboard, the daemon): at
/// start it handles batches an earlier run left half applied (`on_unclean_exit`), and on quit
/// it rolls back what is active when `rollback_on_exit` says so; and it runs the load
/// balancer when `[balancer] enabled`. `spawn` never changes the host and serves nothing; it
/// only observes.
pub fn spawn_managing(config: EngineConfig) -> (EngineHandle, JoinHandle<()>) {
    start(config, true)
}

fn start(config: EngineConfig, manages_host: bool) -> (EngineHandle, JoinHandle<()>) {
    let roots = HostRoots {
        proc: config.host.proc_root.clone(),
        sys: config.host.sys_root.clone(),
    };
    let interval = Duration::from_millis(config.interval_ms);
    let health = HealthBoard::default();
    // Kept-open kernel files need a descriptor each (see host::files).
    let open_files = host::files::raise_open_file_limit();
    tracing::debug!(open_files, "open-file limit");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let topology = match host::topology::read_topology(&roots) {
        Ok(t) => t,
        Err(err) => {
            tracing::error!(%err, "cannot read CPU topology");
            Topology::default()
        }
    };
    let mounts = Arc::new(CgroupMounts::detect(&roots));
    let mut host_info = host::info::read_host_info(&roots);
    host_info.cgroup_layout = mounts.layout();
    if !host_info.is_root {
        tracing::info!("not running as root: read-only, nothing on the host will be changed");
    }

    let mut tasks = Vec::new();
    macro_rules! blocking_sampler {
        ($name:expr, $round:expr) => {{
            let (tx, rx) = watch::channel(None);
            tasks.push(tokio::spawn(sampler::run(
                $name,
                $round,
                interval,
                tx,
                health.clone(),
                shutdown_rx.clone(),
            )));
            rx
        }};
    }
    let mut cpu = CpuSampler::new(&roots);
    let mut memory = MemorySampler::new(&roots);
    let pressure_roots = roots.clone();
    let mut disks = DiskSampler::new(&roots);
    let mut nets = NetSampler::new(&roots);
    let mut processes = ProcessSampler::new(&roots, config.top_processes);
    let readings = Readings {
        cpu: blocking_sampler!("cpu", move || cpu.sample()),
        memory: blocking_sampler!("memory", move || -> Result<MemoryReading, HostError> {
            Ok(MemoryReading {
                memory: memory.sample()?,
                pressure: host::psi::read_system_pressure(&pressure_roots),
            })
        }),
        disks: blocking_sampler!("disks", move || disks.sample()),
        nets: blocking_sampler!("net", move || nets.sample()),
        processes: blocking_sampler!("processes", move || processes.sample()),
        changes: if host_info.is_root {
            let (tx, rx) = watch::channel(None);
            let (state_dir, journal_roots) = (config.optimizer.state_dir.clone(), roots.clone());
            tasks.push(tokio::spawn(sampler::run(
                "journal",
                move || crate::optimizer::view::read_changes(&state_dir, &journal_roots),
                JOURNAL_INTERVAL.max(interval),
                tx,
                health.clone(),
                shutdown_rx.clone(),
            )));
            rx
        } else {
            // Not root: the journal is not ours to read; the view says so.
            watch::channel(Some(ChangesSnapshot {
                state_dir: config.optimizer.state_dir.display().to_string(),
                problems: vec!["read-only (not root): the journal is not read".to_string()],
                ..ChangesSnapshot::default()
            }))
            .1
        },
        containers: {
            let initial = ContainersSnapshot {
                status: if config.docker.enabled {
                    DockerStatus::Connecting
                } else {
                    DockerStatus::Disabled
                },
                agent_label: (!config.docker.all_containers_are_agents)
                    .then(|| config.docker.agent_label.clone()),
                ..ContainersSnapshot::default()
            };
            let (tx, rx) = watch::channel(initial);
            if config.docker.enabled || !config.agents.is_empty() {
                let sampler = ContainerSampler::new(
                    &config.docker,
                    &config.agents,
                    roots.clone(),
                    mounts.clone(),
                    interval,
                    health.clone(),
                );
                tasks.push(tokio::spawn(sampler.run(tx, shutdown_rx.clone())));
            }
            rx
        },
    };

    let cache = sutazai_cache::open_for(&config.cache, &config.optimizer.state_dir.join("cache"));
    // On its own runtime and thread: sampling rounds never stall a proxied request. Only an
    // engine that runs for the host serves it: `report`, `snapshot` and `bench` start
    // engines that only observe, and must not bind the proxy's port.
    let (balancer, balancer_failed) = match manages_host {
        true => match sutazai_balancer::start_for(&config.balancer) {
            Ok(balancer) => (balancer, None),
            Err(reason) => (None, Some(reason)),
        },
        false => (None, None),
    };
    if let Some(balancer) = &balancer
        && config.docker.enabled
    {
        // Containers labelled sutazai.backend.port become backends, and stop being ones.
        let docker =
            crate::containers::backends::DockerBackends::new(&config.docker.endpoint, interval);
        tasks.push(tokio::spawn(sutazai_balancer::discovery::run(
            balancer.clone(),
            docker,
            shutdown_rx.clone(),
        )));
    }
    let host_info_is_root = host_info.is_root;
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let mut ticker = Ticker {
        interval,
        mode: config.mode,
        report_dir: config.report_dir.clone(),
        report_writer: config.report_writer.clone(),
        host_info,
        topology: Arc::new(topology),
        history: HostHistory::with_capacity(config.history_points),
        health,
        readings,
        roots: roots.clone(),
        optimizer: config.optimizer.clone(),
        manages_host: manages_host && host_info_is_root,
        changes: ChangesSnapshot::default(),
        docker_endpoint: config.docker.endpoint.clone(),
        detector: Detector::new(config.detect.clone()),
        strategies: crate::eliminator::built_in(),
        strategy_context: StrategyContext {
            batch_policy: config.optimizer.scheduler_policy,
            thp_allowed: config.optimizer.enable_transparent_hugepages,
            ksm_available: config.host.sys_root.join("kernel/mm/ksm/run").is_file(),
            numa_allowed: config.optimizer.enable_numa,
        },
        proposals: ProposalBook::default(),
        coordinator: config.coordinator.clone(),
        declarations: load_declarations(&config, manages_host && host_info_is_root),
        off_plan_since: None,
        pending_since: Default::default(),
        rebalancing: Default::default(),
        shared_parent: None,
        plan_failed_last: false,
        own_cpus: None,
        cooldown_until: Instant::now(),
        following: false,
        next_follow: Instant::now(),
        jobs_tx,
        jobs_rx: Some(jobs_rx),
        started: Instant::now(),
        seq: 0,
        notice: None,
        notice_seq: 0,
        cache: cache.clone(),
        balancer: balancer.clone(),
        pools: None,
        pools_not_serving: None,
    };
    if let Some(reason) = balancer_failed {
        ticker.set_notice(reason, true);
    }
    if let Some(why) = reserved_not_online(&config, &ticker.topology) {
        tracing::warn!("{why}");
        ticker.set_notice(why, true);
    }
    let name = &config.coordinator.shared_parent;
    if config.coordinator.enabled && manages_host && host_info_is_root && !name.is_empty() {
        match crate::optimizer::actuators::ensure_shared_parent(&roots, name) {
            Ok(target) => ticker.shared_parent = Some((format!("/{name}"), target)),
            Err(why) => {
                let text = format!("[coordinator] shared_parent {name:?}: {why}");
                tracing::warn!("{text}");
                ticker.set_notice(text, true);
            }
        }
    }
    let (snap_tx, snap_rx) = watch::channel(Arc::new(ticker.compose()));
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let balancer_at_exit = balancer.clone();
    match (manages_host, config.object_store.enabled) {
        (false, _) => {
            ticker.pools_not_serving = Some(
                "this engine only observes: the dashboard or `sutazai-top serve` serves the pools"
                    .into(),
            );
        }
        (true, false) => {
            ticker.pools_not_serving = Some("[object_store] enabled = false".into());
        }
        (true, true) => match super::pools::start(&config, snap_rx.clone(), roots.clone()) {
            Ok(server) => ticker.pools = Some(Arc::new(server)),
            Err(why) => {
                tracing::warn!("memory pools not served: {why}");
                ticker.pools_not_serving = Some(why);
            }
        },
    }
    let pools_at_exit = ticker.pools.clone();
    let engine = tokio::spawn(async move {
        ticker.run(snap_tx, cmd_rx).await;
        let _ = shutdown_tx.send(true);
        if let Some(pools) = pools_at_exit {
            pools.stop();
        }
        if let Some(balancer) = balancer_at_exit {
            // Joins the proxy's thread after in-flight requests finish (a few seconds at most).
            let _ = tokio::task::spawn_blocking(move || balancer.shutdown()).await;
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    (
        EngineHandle {
            snapshots: snap_rx,
            commands: cmd_tx,
            cache,
            balancer,
        },
        engine,
    )
}

/// The declarations an engine that runs for the host kept in its state dir; a file that
/// cannot be read is said in the log and counts as none.
fn load_declarations(config: &EngineConfig, for_the_host: bool) -> Vec<crate::model::Declaration> {
    if !for_the_host || !config.coordinator.enabled {
        return Vec::new();
    }
    crate::coordinator::registry::load(&config.optimizer.state_dir).unwrap_or_else(|err| {
        tracing::error!(%err, "agent declarations not loaded");
        Vec::new()
    })
}

/// Reserved CPUs the host does not have online are ignored by the plan: said once at start,
/// since a typo there would otherwise leave the system nothing reserved without a word.
fn reserved_not_online(config: &EngineConfig, topology: &Topology) -> Option<String> {
    if !config.coordinator.enabled || topology.cpus.is_empty() {
        return None;
    }
    let missing: Vec<u32> = config
        .coordinator
        .reserved()
        .into_iter()
        .filter(|id| !topology.cpus.iter().any(|c| c.id == *id && c.online))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "[coordinator] reserved_cpus: {} not online here, ignored",
            host::format_cpu_list(&missing)
        )
    })
}

/// The tick: composes snapshots and answers commands.
struct Ticker {
    interval: Duration,
    mode: Mode,
    report_dir: PathBuf,
    report_writer: Option<ReportWriter>,
    host_info: HostInfo,
    topology: Arc<Topology>,
    history: HostHistory,
    health: HealthBoard,
    readings: Readings,
    roots: HostRoots,
    optimizer: OptimizerConfig,
    /// Handle leftovers at start and `rollback_on_exit` at quit (root faces only).
    manages_host: bool,
    /// The latest journal view (from the journal sampler, or fresher after a rollback).
    changes: ChangesSnapshot,
    docker_endpoint: String,
    detector: Detector,
    strategies: Vec<Box<dyn EliminationStrategy>>,
    strategy_context: StrategyContext,
    proposals: ProposalBook,
    coordinator: CoordinatorConfig,
    /// Needs registered through the API, laid over the agents' labels.
    declarations: Vec<crate::model::Declaration>,
    /// The seq of the first tick of the current run of ticks off plan.
    off_plan_since: Option<u64>,
    /// The first tick each pending agent (by id) was pending.
    pending_since: std::collections::HashMap<String, u64>,
    /// Rebalancing by load: the adjustments in force and the step proposed last.
    rebalancing: coordination::Rebalancing,
    /// `[coordinator] shared_parent`, once it exists: its cgroup name and target path.
    shared_parent: Option<(String, PathBuf)>,
    /// The last plan applied failed (the next failure waits, as any fix's does).
    plan_failed_last: bool,
    /// The CPUs the engine started with and those it last confined itself to (`None`:
    /// never moved).
    own_cpus: Option<(Vec<u32>, Vec<u32>)>,
    /// No automatic action before this instant.
    cooldown_until: Instant,
    /// A pass bringing new threads under active batches is running; the next is due then.
    following: bool,
    next_follow: Instant,
    /// Applies and rollbacks run off the tick loop and report here.
    jobs_tx: mpsc::UnboundedSender<Job>,
    jobs_rx: Option<mpsc::UnboundedReceiver<Job>>,
    started: Instant,
    seq: u64,
    notice: Option<Notice>,
    notice_seq: u64,
    /// The agents' cache; its statistics go into every snapshot.
    cache: Option<Arc<sutazai_cache::Cache>>,
    /// The load balancer; its counters go into every snapshot.
    balancer: Option<Arc<sutazai_balancer::Balancer>>,
    /// The memory pools' store, or why this engine does not serve it.
    pools: Option<Arc<sutazai_pools::Server>>,
    pools_not_serving: Option<String>,
}

impl Ticker {
    async fn run(
        mut self,
        snapshots: watch::Sender<Arc<Snapshot>>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick fires at once; let the samplers run a round
        if self.manages_host {
            self.recover_on_start().await;
        }
        let mut containers_live = true;
        let Some(mut jobs) = self.jobs_rx.take() else {
            return;
        };
        loop {
            tokio::select! {
                Some(job) = jobs.recv() => {
                    match job {
                        Job::Applied { id, outcome } => self.finish_apply(id, outcome),
                        Job::Followed(outcome) => {
                            // Nothing the face shows changed: no new snapshot.
                            self.finish_follow(outcome);
                            continue;
                        }
                        Job::RolledBack { origin, outcome } => {
                            self.finish_rollback(origin, outcome);
                        }
                    }
                    let mut snap = (**snapshots.borrow()).clone();
                    snap.proposals = self.proposals.list().to_vec();
                    snap.changes = self.changes.clone();
                    snap.notice = self.notice.clone();
                    snapshots.send_replace(Arc::new(snap));
                }
                _ = ticker.tick() => {
                    self.seq += 1;
                    let mut snap = self.compose();
                    self.push_history(&snap);
                    self.detect(&mut snap);
                    self.validate(&snap);
                    self.enforce_plan(&snapshots);
                    self.auto_fix(&snapshots);
                    self.follow_threads();
                    // Validation and auto-fix may have moved proposals or set a notice.
                    snap.proposals = self.proposals.list().to_vec();
                    snap.notice = self.notice.clone();
                    snapshots.send_replace(Arc::new(self.with_history(snap)));
                }
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    if !self.handle(command, &snapshots).await {
                        return;
                    }
                }
                changed = self.readings.containers.changed(), if containers_live => {
                    match changed {
                        Ok(()) => self.publish_membership_change(&snapshots),
                        // No containers sampler (Docker disabled) or it stopped: ticks go on.
                        Err(_) => containers_live = false,
                    }
                }
            }
        }
    }

    /// Apply one command; false means quit.
    async fn handle(&mut self, command: Command, snapshots: &watch::Sender<Arc<Snapshot>>) -> bool {
        match command {
            Command::Quit => {
                if self.manages_host {
                    self.on_exit().await;
                }
                return false;
            }
            Command::Apply(id) => self.start_apply(id, snapshots),
            Command::Dismiss(id) => {
                if self.proposals.get(id).is_some_and(|p| p.status.is_open()) {
                    self.proposals.set_status(id, ProposalStatus::Dismissed);
                    self.set_notice(format!("proposal {id} dismissed"), false);
                } else {
                    self.set_notice(
                        format!("proposal {id} is not waiting; nothing dismissed"),
                        true,
                    );
                }
            }
            Command::Rollback(batch) => self.start_rollback(Some(batch), RollbackOrigin::Operator),
            Command::RollbackAll => self.start_rollback(None, RollbackOrigin::Operator),
            Command::Declare(declaration) => self.declare(declaration),
            Command::Undeclare(agent) => self.undeclare(&agent),
            Command::SetMode(mode) => {
                self.mode = mode;
                tracing::info!(mode = %mode, "mode changed");
                // Lowering the mode offers to roll back what is above it.
                let above: Vec<String> = self
                    .proposals
                    .list()
                    .iter()
                    .filter(|p| {
                        matches!(p.status, ProposalStatus::Applied { .. })
                            && !p.fix.risk.allowed_in(mode)
                    })
                    .map(|p| format!("P{}", p.id))
                    .collect();
                let text = if above.is_empty() {
                    format!("mode: {mode}")
                } else {
                    format!(
                        "mode: {mode}; applied fixes above it: {} (r in Proposals rolls one back)",
                        above.join(", ")
                    )
                };
                self.set_notice(text, false);
            }
            Command::ExportReport => {
                let current = snapshots.borrow().clone();
                let dir = self.report_dir.clone();
                let written = match self.report_writer.clone() {
                    Some(write) => tokio::task::spawn_blocking(move || write(&current, &dir)).await,
                    None => Ok(Err("this engine writes no reports".to_string())),
                };
                match written {
                    Ok(Ok(files)) => {
                        let names: Vec<String> =
                            files.iter().map(|f| f.display().to_string()).collect();
                        tracing::info!(files = %names.join(", "), "report written");
                        self.set_notice(
                            format!("report written to {}", names.join(" and ")),
                            false,
                        );
                    }
                    Ok(Err(err)) => {
                        tracing::error!(%err, "report failed");
                        self.set_notice(format!("report failed: {err}"), true);
                    }
                    Err(err) => self.set_notice(format!("report failed: {err}"), true),
                }
            }
        }
        // Answer at once rather than at the next tick: same data, new mode or notice.
        let mut snap = (**snapshots.borrow()).clone();
        snap.mode = self.mode;
        snap.notice = self.notice.clone();
        snap.changes = self.changes.clone();
        snap.proposals = self.proposals.list().to_vec();
        snapshots.send_replace(Arc::new(snap));
        true
    }

    /// A container appeared or went away between ticks (Docker event): show it now rather
    /// than at the next tick. Usage-only updates wait for the tick.
    fn publish_membership_change(&mut self, snapshots: &watch::Sender<Arc<Snapshot>>) {
        let same_members = |a: &ContainersSnapshot, b: &ContainersSnapshot| {
            a.status == b.status
                && a.agents.len() == b.agents.len()
                && a.agents.iter().zip(&b.agents).all(|(x, y)| x.id == y.id)
        };
        let changed = {
            let latest = self.readings.containers.borrow_and_update();
            let shown = snapshots.borrow();
            !same_members(&latest, &shown.containers)
        };
        if !changed {
            return;
        }
        let mut snap = (**snapshots.borrow()).clone();
        snap.containers = self.readings.containers.borrow().clone();
        // An agent that started or stopped is planned for now, not at the next tick: with
        // `enforce`, its allocation is on its way before the tick would have come.
        if let Some((bottleneck, fix)) = self.coordinate(&mut snap) {
            self.proposals.offer(&bottleneck, fix, &snap);
            self.rebalancing.note_offered(&self.proposals);
            snap.proposals = self.proposals.list().to_vec();
        }
        snapshots.send_replace(Arc::new(snap));
        self.enforce_plan(snapshots);
    }

    fn set_notice(&mut self, text: String, is_error: bool) {
        self.notice_seq += 1;
        self.notice = Some(Notice {
            seq: self.notice_seq,
            text,
            is_error,
        });
    }

    /// A CPU taken offline or brought online changes what may be planned: when the kernel's
    /// online list (read by the CPU sampler) differs from the topology's, the topology is read
    /// again.
    fn follow_hotplug(&mut self, online: Option<&[u32]>) {
        let Some(now) = online else {
            return;
        };
        let known: Vec<u32> = self
            .topology
            .cpus
            .iter()
            .filter(|c| c.online)
            .map(|c| c.id)
            .collect();
        if now == known.as_slice() {
            return;
        }
        match host::topology::read_topology(&self.roots) {
            Ok(topology) => {
                let text = format!(
                    "CPUs online changed: {} -> {}; plans follow",
                    host::format_cpu_list(&known),
                    host::format_cpu_list(now)
                );
                tracing::warn!("{text}");
                self.set_notice(text, false);
                self.topology = Arc::new(topology);
            }
            Err(err) => {
                tracing::error!(%err, "CPUs online changed, but the topology cannot be read")
            }
        }
    }

    /// A snapshot of the latest readings (history not included).
    fn compose(&mut self) -> Snapshot {
        let cpu = latest(&self.readings.cpu);
        self.follow_hotplug(cpu.online.as_deref());
        let fresh_view = if self.readings.changes.has_changed().unwrap_or(false) {
            self.readings.changes.borrow_and_update().clone()
        } else {
            None
        };
        if let Some(view) = fresh_view {
            self.changes = view;
            self.sync_proposals_with_journal();
        }
        let memory = latest(&self.readings.memory);
        let mut host = self.host_info.clone();
        host.uptime_secs += self.started.elapsed().as_secs();
        Snapshot {
            seq: self.seq,
            taken_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            interval_ms: self.interval.as_millis() as u64,
            mode: self.mode,
            auto_fix: self.optimizer.auto_fix,
            host,
            topology: self.topology.clone(),
            cpu,
            memory: memory.memory,
            pressure: memory.pressure,
            disks: latest(&self.readings.disks),
            nets: latest(&self.readings.nets),
            processes: latest(&self.readings.processes),
            containers: self.readings.containers.borrow().clone(),
            history: HostHistory::default(),
            changes: self.changes.clone(),
            bottlenecks: self.detector.current().to_vec(),
            proposals: self.proposals.list().to_vec(),
            coordinator: None,
            samplers: self.health.entries(),
            notice: self.notice.clone(),
            cache: self.cache.as_ref().map(|cache| cache.tick()),
            balancer: self.balancer.as_ref().map(|balancer| balancer.snapshot()),
            pools: crate::model::PoolsView {
                serving: self.pools.as_ref().map(|pools| pools.snapshot()),
                not_serving: self.pools_not_serving.clone(),
            },
        }
    }

    fn push_history(&mut self, snap: &Snapshot) {
        let h = &mut self.history;
        let m = &snap.memory;
        // No point for a tick without a CPU interval (the first), rather than a false 0.
        if snap.cpu.total.has_data() {
            h.cpu_busy_pct.push(snap.cpu.total.busy());
        }
        h.mem_used_pct.push((m.used_fraction() * 100.0) as f32);
        let swap_used = if m.swap_total_kb == 0 {
            0.0
        } else {
            100.0 * (1.0 - m.swap_free_kb as f64 / m.swap_total_kb as f64)
        };
        h.swap_used_pct.push(swap_used as f32);
        let p = &snap.pressure;
        let some = |r: Option<crate::model::PsiResource>| r.map(|r| r.some.avg10).unwrap_or(0.0);
        let full = |r: Option<crate::model::PsiResource>| {
            r.and_then(|r| r.full).map(|f| f.avg10).unwrap_or(0.0)
        };
        h.psi_cpu_some.push(some(p.cpu));
        h.psi_memory_some.push(some(p.memory));
        h.psi_memory_full.push(full(p.memory));
        h.psi_io_some.push(some(p.io));
        h.psi_io_full.push(full(p.io));
    }

    fn with_history(&self, mut snap: Snapshot) -> Snapshot {
        snap.history = self.history.clone();
        snap
    }
}
