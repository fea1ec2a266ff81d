//! `sutazai-top report`: sample the host for a while, then write a JSON or HTML report of
//! what was seen (the original design's profiling run). When a service runs, the report is
//! of the service's engine, over its API: its fixes, cache and balancer are the host's, and
//! an engine of our own would see none of them. Otherwise a read-only engine of our own
//! samples the host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use sutazai_top::config::Config;
use sutazai_top::engine::{self, Command};
use sutazai_top::report::{self, Format};

use super::faces::wait_for_tick;
use super::service::PidLock;

/// Ticks sampled when no --duration is given: enough for rates and a short history.
const DEFAULT_TICKS: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Json,
    Html,
}

impl From<ReportFormat> for Format {
    fn from(format: ReportFormat) -> Format {
        match format {
            ReportFormat::Json => Format::Json,
            ReportFormat::Html => Format::Html,
        }
    }
}

/// Where the report goes: a new file in the report dir, a named new file, or stdout.
pub enum Destination {
    ReportDir,
    File(PathBuf),
    Stdout,
}

impl Destination {
    pub fn from_flag(output: Option<PathBuf>) -> Destination {
        match output {
            None => Destination::ReportDir,
            Some(path) if path.as_os_str() == "-" => Destination::Stdout,
            Some(path) => Destination::File(path),
        }
    }
}

pub async fn report(
    config: Config,
    format: ReportFormat,
    output: Destination,
    duration_secs: Option<u64>,
) -> anyhow::Result<()> {
    check_window_fits(&config, duration_secs)?;
    // Refuse a taken -o before sampling for minutes, not after.
    if let Destination::File(path) = &output {
        anyhow::ensure!(
            std::fs::symlink_metadata(path).is_err(),
            "{} already exists; a report never overwrites a file (choose another -o)",
            path.display()
        );
    }
    let report_dir = config.report_dir.clone();
    let (mut handle, engine) = sampler(config).await?;
    let sampled = sample(&mut handle, duration_secs).await;
    let snap = handle.snapshots.borrow().clone();
    // Our own engine stops; from a service we only detach.
    let _ = handle.commands.send(Command::Quit).await;
    let _ = engine.await;
    sampled?;
    let format = Format::from(format);
    match output {
        Destination::Stdout => {
            let text = report::render(&snap, format)?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.write_all(b"\n"))
                .context("cannot write the report to stdout")?;
        }
        Destination::File(path) => print_path(&report::write_to_path(&snap, &path, format)?),
        Destination::ReportDir => print_path(&report::write_in_dir(&snap, &report_dir, format)?),
    }
    Ok(())
}

/// The engine to report on: the running service's, else a read-only one of our own. The
/// returned task ends after `Command::Quit`.
async fn sampler(
    config: Config,
) -> anyhow::Result<(engine::EngineHandle, tokio::task::JoinHandle<()>)> {
    // No usable runtime dir (not root): no service can be running that we could reach.
    let service_runs = matches!(PidLock::share(&config.service.runtime_dir), Ok(None));
    if !service_runs {
        let (handle, engine) = engine::spawn(config.engine());
        return Ok((handle, engine));
    }
    let (pid, handle, remote) = super::service::attach(&config).await?;
    tracing::info!(pid, "reporting on the running service");
    let detached = tokio::spawn(async move {
        let _ = remote.await;
    });
    Ok((handle, detached))
}

fn print_path(path: &Path) {
    println!("{}", path.display());
}

/// A window longer than the history rings would be silently cut; say so before sampling.
fn check_window_fits(config: &Config, duration_secs: Option<u64>) -> anyhow::Result<()> {
    let Some(secs) = duration_secs else {
        return Ok(());
    };
    anyhow::ensure!(secs > 0, "--duration must be at least 1 second");
    let kept_secs = config.history_minutes.saturating_mul(60);
    anyhow::ensure!(
        secs <= kept_secs,
        "--duration {secs} is longer than the history kept ({kept_secs} s); \
         raise history_minutes in the config"
    );
    Ok(())
}

/// Wait `duration_secs` (then the next tick, so the last second is in), or DEFAULT_TICKS.
async fn sample(
    handle: &mut engine::EngineHandle,
    duration_secs: Option<u64>,
) -> anyhow::Result<()> {
    match duration_secs {
        None => wait_for_tick(handle, DEFAULT_TICKS).await,
        Some(secs) => {
            if secs >= 30 {
                eprintln!("sutazai-top: sampling for {secs} s before writing the report");
            }
            let started = handle.snapshots.borrow().seq;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let now = handle.snapshots.borrow().seq;
            // At least two ticks in all, so rates exist even for --duration 1.
            wait_for_tick(handle, now.max(started).saturating_add(1).max(2)).await
        }
    }
}
