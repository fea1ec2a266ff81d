//! The `sutazai-top` binary: parses the command line, loads the config, picks a face.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use sutazai_top::config::{Config, MIN_INTERVAL_MS, Mode};
use sutazai_top::engine::{self, Command};
use sutazai_top::host::HostRoots;
use sutazai_top::optimizer::actuators::{
    ContainerActuator, HostActuators, cgroup_file_names, plan_cgroup, plan_container_with,
    plan_process,
};
use sutazai_top::optimizer::change::{Change, Knob, Target};
use sutazai_top::optimizer::journal::{ChangeState, Recovery};
use sutazai_top::optimizer::master::Optimizer;

/// Exit status for a bad config or bad flag value (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "sutazai-top", version, about = "top for many-agent AI hosts")]
struct Cli {
    /// Config file (default: ~/.config/sutazai-top/config.toml, then /etc/sutazai/config.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Sampling tick in milliseconds (at least 250).
    #[arg(long, value_name = "MS")]
    interval: Option<u64>,
    /// Mode at start: conservative, balanced, aggressive (or 1, 2, 3).
    #[arg(long)]
    mode: Option<Mode>,
    /// Where procfs is mounted.
    #[arg(long, value_name = "DIR")]
    proc_root: Option<PathBuf>,
    /// Where sysfs is mounted.
    #[arg(long, value_name = "DIR")]
    sys_root: Option<PathBuf>,
    /// Docker endpoint, e.g. unix:///var/run/docker.sock (default: DOCKER_HOST, else the socket).
    #[arg(long, value_name = "URL")]
    docker_host: Option<String>,
    /// Do not watch Docker containers.
    #[arg(long)]
    no_docker: bool,
    /// Treat every container as an agent, labelled or not.
    #[arg(long)]
    all_containers: bool,
    /// Directory where `e` writes reports.
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// Apply the fixes the mode allows without asking.
    #[arg(long)]
    auto_fix: bool,
    /// Directory of the journal of changes to the host.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Log filter, e.g. info or sutazai_top=debug.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print one snapshot as JSON after a few ticks (so rates exist) and exit.
    Snapshot {
        /// Ticks to wait before printing.
        #[arg(long, default_value_t = 2)]
        ticks: u64,
    },
    /// Change one setting of a process (every thread), a container or a cgroup, journaled and
    /// reversible.
    Set {
        /// The process (thread knobs: affinity, policy, nice, ioprio).
        #[arg(
            long,
            conflicts_with_all = ["container", "cgroup"],
            required_unless_present_any = ["container", "cgroup"]
        )]
        pid: Option<i32>,
        /// The container, by id or name (container knobs: cpuset, cpuset-mems, shares, quota,
        /// memory).
        #[arg(long, conflicts_with = "cgroup")]
        container: Option<String>,
        /// The cgroup of an agent that is a plain process, relative to the sys root
        /// ("fs/cgroup/cpu/agents/x") or absolute under it; the knob is a cgroup file:
        /// cpu.weight (1..10000), cpu.max ("QUOTA PERIOD", "max PERIOD" or the quota alone),
        /// memory.high, memory.max (bytes, k/m/g, or max), cpu.shares (2..262144),
        /// cpu.cfs_quota_us (-1 or >= 1000), memory.limit_in_bytes,
        /// memory.soft_limit_in_bytes (bytes or -1), cpuset.cpus, cpuset.mems (lists).
        /// Example: set --cgroup fs/cgroup/cpu/agents/x cpu.shares 512
        #[arg(long, value_name = "PATH")]
        cgroup: Option<PathBuf>,
        /// affinity (a CPU list), policy (SCHED_OTHER|SCHED_BATCH|SCHED_IDLE), nice (-20..19),
        /// ioprio (rt/N, be/N, idle, none); cpuset and cpuset-mems (lists), shares (2..262144),
        /// quota (cores, e.g. 1.5, or max), memory (bytes, k/m/g, or max); with --cgroup, a
        /// cgroup file name.
        #[arg(value_parser = parse_set_knob)]
        knob: SetKnob,
        value: String,
        /// Pause between changes (to watch a batch being applied; tests use it to crash one
        /// half way).
        #[arg(long, default_value_t = 0, hide = true)]
        pause_between_ms: u64,
    },
    /// Undo changes: one batch by id, or every open batch.
    Rollback {
        /// The batch to undo (see `sutazai-top journal`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        #[arg(long)]
        all: bool,
    },
    /// Show the changes active on the host (open batches) and any journal damage.
    Journal,
    /// Measure the engine's own CPU time per sampling round and its memory (for bench/).
    #[command(hide = true)]
    BenchObserve {
        /// How long to measure, after a warm-up of three ticks.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

/// Knobs `set` can turn on a process's threads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KnobName {
    Affinity,
    Policy,
    Nice,
    Ioprio,
    Cpuset,
    CpusetMems,
    Shares,
    Quota,
    Memory,
}

/// What `set` turns: a named knob, or a cgroup file (a name with a dot, "cpu.shares").
#[derive(Debug, Clone)]
enum SetKnob {
    Named(KnobName),
    CgroupFile(String),
}

fn parse_set_knob(text: &str) -> Result<SetKnob, String> {
    use clap::ValueEnum;
    if text.contains('.') {
        return Ok(SetKnob::CgroupFile(text.to_string()));
    }
    KnobName::from_str(text, true)
        .map(SetKnob::Named)
        .map_err(|_| {
            let names: Vec<String> = KnobName::value_variants()
                .iter()
                .filter_map(|k| Some(k.to_possible_value()?.get_name().to_string()))
                .chain(cgroup_file_names().map(str::to_string))
                .collect();
            format!("unknown knob; expected one of {}", names.join(", "))
        })
}

impl KnobName {
    fn knob(self) -> Knob {
        match self {
            KnobName::Affinity => Knob::Affinity,
            KnobName::Policy => Knob::Policy,
            KnobName::Nice => Knob::Nice,
            KnobName::Ioprio => Knob::IoPriority,
            KnobName::Cpuset => Knob::ContainerCpusetCpus,
            KnobName::CpusetMems => Knob::ContainerCpusetMems,
            KnobName::Shares => Knob::ContainerCpuShares,
            KnobName::Quota => Knob::ContainerCpuQuota,
            KnobName::Memory => Knob::ContainerMemoryLimit,
        }
    }

    fn is_container_knob(self) -> bool {
        matches!(
            self,
            KnobName::Cpuset
                | KnobName::CpusetMems
                | KnobName::Shares
                | KnobName::Quota
                | KnobName::Memory
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("sutazai-top: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sutazai-top: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The config file (if any) with the command line laid over it.
fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut config = match Config::locate(cli.config.as_deref()) {
        Some(path) => Config::load(&path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(ms) = cli.interval {
        if ms < MIN_INTERVAL_MS {
            return Err(format!(
                "--interval {ms} is below the floor of {MIN_INTERVAL_MS} ms"
            ));
        }
        config.interval_ms = ms;
    }
    if let Some(mode) = cli.mode {
        config.mode = mode;
    }
    if let Some(dir) = &cli.proc_root {
        config.host.proc_root = dir.clone();
    }
    if let Some(dir) = &cli.sys_root {
        config.host.sys_root = dir.clone();
    }
    if let Some(host) = &cli.docker_host {
        config.docker.endpoint = host.clone();
    }
    if cli.no_docker {
        config.docker.enabled = false;
    }
    if cli.all_containers {
        config.docker.all_containers_are_agents = true;
    }
    if let Some(dir) = &cli.report_dir {
        config.report_dir = dir.clone();
    }
    if cli.auto_fix {
        config.optimizer.auto_fix = true;
    }
    if let Some(dir) = &cli.state_dir {
        config.optimizer.state_dir = dir.clone();
    }
    if let Some(level) = &cli.log_level {
        config.log.level = level.clone();
    }
    Ok(config)
}

fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_name("sutazai-engine")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        None => {
            anyhow::ensure!(
                std::io::stdout().is_terminal(),
                "the dashboard needs a terminal; for a one-shot JSON view run `sutazai-top snapshot`"
            );
            sutazai_top::tui::init_logging(&config.log.level)
                .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))?;
            runtime.block_on(dashboard(config))
        }
        Some(Cmd::Snapshot { ticks }) => {
            init_stderr_logging(&config.log.level);
            runtime.block_on(snapshot(config, ticks))
        }
        Some(Cmd::Set {
            pid,
            container,
            cgroup,
            knob,
            value,
            pause_between_ms,
        }) => {
            init_stderr_logging(&config.log.level);
            let target = match (pid, container, cgroup) {
                (Some(pid), _, _) => SetTarget::Process(pid),
                (None, Some(container), _) => SetTarget::Container(container),
                (None, None, Some(path)) => SetTarget::Cgroup(path),
                (None, None, None) => anyhow::bail!("name a --pid, a --container or a --cgroup"),
            };
            set_knob(&config, target, knob, &value, pause_between_ms)
        }
        Some(Cmd::Rollback { id, all: _ }) => {
            init_stderr_logging(&config.log.level);
            rollback(&config, id)
        }
        Some(Cmd::Journal) => {
            init_stderr_logging(&config.log.level);
            show_journal(&config)
        }
        Some(Cmd::BenchObserve { seconds }) => {
            init_stderr_logging(&config.log.level);
            runtime.block_on(bench_observe(config, seconds))
        }
    }
}

fn init_stderr_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn dashboard(config: Config) -> anyhow::Result<()> {
    let (handle, engine) = engine::spawn_managing(config);
    quit_on_signals(handle.commands.clone());
    let face = handle.clone();
    let result = tokio::task::spawn_blocking(move || sutazai_top::tui::run(face)).await;
    // The TUI sends Quit itself; this covers its error paths.
    let _ = handle.commands.send(Command::Quit).await;
    // Quitting may roll changes back (rollback_on_exit): give that time to finish.
    let _ = tokio::time::timeout(Duration::from_secs(60), engine).await;
    result
        .context("the dashboard thread failed")?
        .context("terminal error")
}

/// SIGTERM, SIGHUP (closed terminal or ssh session) and SIGINT stop the engine; its snapshot
/// channel closes, the dashboard returns and its guard restores the terminal.
fn quit_on_signals(commands: tokio::sync::mpsc::Sender<Command>) {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = [
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::interrupt(),
    ]
    .map(signal);
    tokio::spawn(async move {
        let [Ok(mut term), Ok(mut hup), Ok(mut int)] = signals else {
            tracing::warn!("cannot listen for signals; quit with q");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = hup.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received; quitting");
        let _ = commands.send(Command::Quit).await;
    });
}

/// Wait until the engine has published tick `seq`.
async fn wait_for_tick(handle: &mut engine::EngineHandle, seq: u64) -> anyhow::Result<()> {
    while handle.snapshots.borrow_and_update().seq < seq {
        handle
            .snapshots
            .changed()
            .await
            .context("engine stopped early")?;
    }
    Ok(())
}

async fn snapshot(config: Config, ticks: u64) -> anyhow::Result<()> {
    let (mut handle, engine) = engine::spawn(config);
    wait_for_tick(&mut handle, ticks.max(1)).await?;
    let snap = handle.snapshots.borrow().clone();
    println!("{}", sutazai_top::report::to_json(&snap)?);
    let _ = handle.commands.send(Command::Quit).await;
    let _ = engine.await;
    Ok(())
}

/// CPU time used by this process so far (user + system).
fn own_cpu_time() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    match usage {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// A field of /proc/self/status in kB (VmRSS, VmHWM).
fn own_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn bench_observe(config: Config, seconds: u64) -> anyhow::Result<()> {
    let interval_ms = config.interval_ms;
    let (mut handle, engine) = engine::spawn(config);
    wait_for_tick(&mut handle, 3).await?;
    let seq0 = handle.snapshots.borrow().seq;
    let cpu0 = own_cpu_time();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = own_cpu_time().saturating_sub(cpu0);
    let wall = t0.elapsed();
    let snap = handle.snapshots.borrow().clone();
    let rounds = snap.seq.saturating_sub(seq0).max(1);
    let summary = serde_json::json!({
        "interval_ms": interval_ms,
        "rounds": rounds,
        "agents": snap.containers.agents.len(),
        "containers_seen": snap.containers.total_seen,
        "processes_kept": snap.processes.len(),
        "cpu_ms_total": cpu.as_secs_f64() * 1e3,
        "cpu_ms_per_round": cpu.as_secs_f64() * 1e3 / rounds as f64,
        "cpu_pct_of_one_core": 100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        "rss_kb": own_status_kb("VmRSS"),
        "peak_rss_kb": own_status_kb("VmHWM"),
        // Mean CPU per round of each sampler over the whole run (warm-up included).
        "sampler_mean_cpu_ms": snap
            .samplers
            .iter()
            .map(|s| (s.name.clone(), s.total_cpu_us as f64 / 1e3 / s.rounds.max(1) as f64))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "samplers": snap.samplers,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    let _ = handle.commands.send(Command::Quit).await;
    let _ = engine.await;
    Ok(())
}

fn host_roots(config: &Config) -> HostRoots {
    HostRoots {
        proc: config.host.proc_root.clone(),
        sys: config.host.sys_root.clone(),
    }
}

fn open_optimizer(config: &Config) -> anyhow::Result<(Optimizer<HostActuators>, Recovery)> {
    let dir = &config.optimizer.state_dir;
    // Waits briefly if a running dashboard is reading the journal at this moment.
    let opened = sutazai_top::optimizer::view::open_waiting(dir, &host_roots(config))
        .with_context(|| format!("cannot open the journal in {}", dir.display()))?;
    report_damage(&opened.1);
    Ok(opened)
}

/// Corrupt or cut journal lines are reported, never trusted and never silently dropped.
fn report_damage(recovery: &Recovery) {
    for problem in sutazai_top::optimizer::view::problems(recovery) {
        eprintln!("sutazai-top: {problem}");
    }
}

/// What `set` changes.
enum SetTarget {
    Process(i32),
    Container(String),
    Cgroup(PathBuf),
}

fn set_knob(
    config: &Config,
    target: SetTarget,
    knob: SetKnob,
    value: &str,
    pause_ms: u64,
) -> anyhow::Result<()> {
    let knob_name = match (&target, knob) {
        (SetTarget::Cgroup(path), SetKnob::CgroupFile(file)) => {
            return set_cgroup_file(config, path, &file, value);
        }
        (SetTarget::Cgroup(_), SetKnob::Named(name)) => {
            anyhow::bail!("{name:?} is not a cgroup file: with --cgroup name one, e.g. cpu.shares")
        }
        (_, SetKnob::CgroupFile(file)) => anyhow::bail!("{file} is a cgroup file: use --cgroup"),
        (_, SetKnob::Named(name)) => name,
    };
    let knob = knob_name.knob();
    let (mut optimizer, _) = open_optimizer(config)?;
    let (changes, label): (Vec<Change>, String) = match target {
        SetTarget::Process(pid) => {
            anyhow::ensure!(
                !knob_name.is_container_knob(),
                "{knob:?} is a container knob: use --container"
            );
            let changes = plan_process(&host_roots(config), pid, knob.clone(), value)
                .with_context(|| format!("cannot plan {knob:?} = {value} for process {pid}"))?;
            let label = format!(
                "set {knob:?} = {value} on process {pid} ({} threads)",
                changes.len()
            );
            (changes, label)
        }
        SetTarget::Container(id) => {
            anyhow::ensure!(
                knob_name.is_container_knob(),
                "{knob:?} is a thread knob: use --pid"
            );
            let actuator = ContainerActuator::new(&config.docker.endpoint, host_roots(config));
            let change = plan_container_with(&actuator, &id, knob.clone(), value)
                .with_context(|| format!("cannot plan {knob:?} = {value} for container {id}"))?;
            (
                vec![change],
                format!("set {knob:?} = {value} on container {id}"),
            )
        }
        SetTarget::Cgroup(_) => anyhow::bail!("a cgroup takes a cgroup file"),
    };
    apply_set(&mut optimizer, &label, &changes, pause_ms)
}

fn apply_set(
    optimizer: &mut Optimizer<HostActuators>,
    label: &str,
    changes: &[Change],
    pause_ms: u64,
) -> anyhow::Result<()> {
    let batch = optimizer
        .apply_paced(label, changes, Duration::from_millis(pause_ms))
        .with_context(|| label.to_string())?;
    println!("batch {batch}: {label}; undo with `sutazai-top rollback {batch}`");
    Ok(())
}

/// One cgroup file of one cgroup; an absolute path under the sys root is taken as relative.
fn set_cgroup_file(
    config: &Config,
    path: &std::path::Path,
    file: &str,
    value: &str,
) -> anyhow::Result<()> {
    let path = path.strip_prefix(&config.host.sys_root).unwrap_or(path);
    let (mut optimizer, _) = open_optimizer(config)?;
    let change = plan_cgroup(&host_roots(config), path, file, value)
        .with_context(|| format!("cannot plan {file} = {value} for cgroup {}", path.display()))?;
    let label = format!("set {file} = {value} on cgroup {}", path.display());
    apply_set(&mut optimizer, &label, &[change], 0)
}

fn rollback(config: &Config, id: Option<u64>) -> anyhow::Result<()> {
    let (mut optimizer, _) = open_optimizer(config)?;
    let results = match id {
        Some(id) => vec![optimizer.rollback_following(id)],
        None => optimizer.rollback_all_following(),
    };
    if results.is_empty() {
        println!("nothing to roll back: no open batch");
    }
    let mut failed = false;
    for result in results {
        let report = match result {
            Ok(report) => report,
            Err(err) => {
                println!("{err}");
                failed = true;
                continue;
            }
        };
        println!(
            "batch {}: {} — {} restored, {} already gone{}",
            report.batch,
            report.label,
            report.restored,
            report.gone,
            if report.failed.is_empty() {
                ""
            } else {
                ", NOT fully restored:"
            }
        );
        for why in &report.failed {
            println!("  {why}");
            failed = true;
        }
    }
    anyhow::ensure!(
        !failed,
        "some changes could not be restored; they stay open in the journal"
    );
    Ok(())
}

fn show_journal(config: &Config) -> anyhow::Result<()> {
    let (optimizer, _) = open_optimizer(config)?;
    let batches = optimizer.open_batches();
    if batches.is_empty() {
        println!("no open batch: nothing of ours is active on the host");
    }
    for batch in batches {
        println!("batch {}: {}", batch.batch, batch.label);
        for (change, state) in &batch.changes {
            let state = match state {
                ChangeState::Pending => "pending".to_string(),
                ChangeState::Applied => "applied".to_string(),
                ChangeState::Failed(why) => format!("failed ({why})"),
                ChangeState::Undone => "undone".to_string(),
            };
            let target = match &change.target {
                Target::Thread { pid, tid, .. } => format!("thread {tid} of {pid}"),
                Target::Container { id } => format!("container {id}"),
                Target::Host => "host".to_string(),
                Target::Process { pid, .. } => format!("process {pid}"),
                Target::Cgroup { path } => format!("cgroup {}", path.display()),
            };
            println!(
                "  {target}: {:?} {} -> {} [{state}]",
                change.knob, change.before, change.after
            );
        }
    }
    Ok(())
}
