//! The engine's faces that run in this process: the dashboard and the one-shot snapshot.

use std::time::Duration;

use anyhow::Context;

use sutazai_top::config::Config;
use sutazai_top::engine::{self, Command};

pub async fn dashboard(config: Config) -> anyhow::Result<()> {
    let (handle, engine) = engine::spawn_managing(config.engine());
    let _alerts = sutazai_top::alerts::spawn_alerts(&config.alerts, handle.snapshots.clone());
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
pub fn quit_on_signals(commands: tokio::sync::mpsc::Sender<Command>) {
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
pub async fn wait_for_tick(handle: &mut engine::EngineHandle, seq: u64) -> anyhow::Result<()> {
    while handle.snapshots.borrow_and_update().seq < seq {
        handle
            .snapshots
            .changed()
            .await
            .context("engine stopped early")?;
    }
    Ok(())
}

pub async fn snapshot(config: Config, ticks: u64) -> anyhow::Result<()> {
    let (mut handle, engine) = engine::spawn(config.engine());
    wait_for_tick(&mut handle, ticks.max(1)).await?;
    let snap = handle.snapshots.borrow().clone();
    println!("{}", sutazai_top::report::to_json(&snap)?);
    let _ = handle.commands.send(Command::Quit).await;
    let _ = engine.await;
    Ok(())
}
