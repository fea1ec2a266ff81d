//! The `sutazai-top` binary: parses the command line, loads the config, picks a face.

mod cli;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cli::bench::bench_observe;
use cli::changes::{SetKnob, SetTarget, parse_set_knob, rollback, set_knob, show_journal};
use cli::faces::snapshot;
use sutazai_top::config::{Config, MAX_INTERVAL_MS, MIN_INTERVAL_MS};
use sutazai_top::model::Mode;

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
    /// Sample the host (read-only), then write a report: host, agents, bottlenecks, proposals
    /// and their before/after figures. Prints the path of the file written.
    Report {
        /// json (for tools; assets/report.schema.json) or html (one self-contained page).
        #[arg(long, value_enum, default_value = "json")]
        format: cli::report::ReportFormat,
        /// The file to write (must not exist; `-` for stdout). Default: a timestamped file in
        /// the report dir.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Seconds to sample before writing (e.g. 300 for a profiling run). Default: 3 ticks.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
        duration: Option<u64>,
    },
    /// Run the engine as a service: no terminal, the local REST API, logs to stderr (and
    /// [service] log_file). One engine per host; a dashboard started meanwhile attaches to it.
    Serve {
        /// Mode at start: conservative, balanced, aggressive (or 1, 2, 3).
        #[arg(long)]
        mode: Option<Mode>,
        /// Apply the fixes the mode allows without asking.
        #[arg(long)]
        auto_fix: bool,
    },
    /// Print what the running engine does (mode, uptime, agents, bottlenecks, fixes); exit
    /// status 1 when none runs.
    Status,
    /// Stop the running service and wait until it has exited.
    Stop {
        /// Roll back every active change first (default: [optimizer] rollback_on_exit).
        #[arg(long, conflicts_with = "keep")]
        rollback: bool,
        /// Keep the changes on the host.
        #[arg(long)]
        keep: bool,
    },
    /// Start a program as an agent would run: with --ksm the whole of its memory is open to
    /// KSM merging (Linux 6.4+; kept by its children). Pair it with an [[agents]] entry
    /// matching the program, and the Pools pane shows what KSM merges for it.
    /// Example: sutazai-top run --ksm -- python3 embedder.py
    Run {
        /// Make every anonymous page of the program mergeable (PR_SET_MEMORY_MERGE).
        #[arg(long)]
        ksm: bool,
        /// The program and its arguments, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Measure the engine's own CPU time per sampling round and its memory (for bench/).
    #[command(hide = true)]
    BenchObserve {
        /// How long to measure, after a warm-up of three ticks.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
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
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) {
            return Err(format!(
                "--interval {ms} must be at least {MIN_INTERVAL_MS} and at most {MAX_INTERVAL_MS} ms"
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
        tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|err| format!("--log-level {level:?} is not a log filter: {err}"))?;
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
            // Attaches to a running service instead of starting a second optimizer.
            runtime.block_on(cli::service::dashboard(config))
        }
        Some(Cmd::Serve { mode, auto_fix }) => {
            let mut config = config;
            if let Some(mode) = mode {
                config.mode = mode;
            }
            config.optimizer.auto_fix |= auto_fix;
            cli::service::serve(config, &runtime)
        }
        Some(Cmd::Status) => runtime.block_on(cli::service::status(&config)),
        // The process becomes the program (exec ends the runtime's threads with it).
        Some(Cmd::Run { ksm, command }) => cli::run::exec(ksm, &command, &config.host.sys_root),
        Some(Cmd::Stop { rollback, keep }) => {
            init_stderr_logging(&config.log.level);
            let choice = (rollback || keep).then_some(rollback);
            runtime.block_on(cli::service::stop(&config, choice))
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
        Some(Cmd::Report {
            format,
            output,
            duration,
        }) => {
            init_stderr_logging(&config.log.level);
            let output = cli::report::Destination::from_flag(output);
            runtime.block_on(cli::report::report(config, format, output, duration))
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
