//! The whole loop on a real host: two batch agents saturate the CPUs, the engine detects it,
//! proposes lowering their CPU weight and running them as SCHED_BATCH, the operator's `a`
//! (Command::Apply) changes the containers and the processes for real, and `r`
//! (Command::Rollback) puts every value back.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;
mod support;

use std::time::Duration;

use support::{Container, RunningEngine, docker_ok, test_config, unique};
use sutazai_top::engine::Command;
use sutazai_top::model::Snapshot;
use sutazai_top::model::{Proposal, ProposalStatus};

fn proposal<'a>(snap: &'a Snapshot, strategy: &str) -> Option<&'a Proposal> {
    snap.proposals
        .iter()
        .rev()
        .find(|p| p.fix.strategy == strategy)
}

fn shares(c: &Container) -> String {
    docker_ok(&["inspect", "-f", "{{.HostConfig.CpuShares}}", &c.id])
}

fn main_pid(c: &Container) -> i32 {
    docker_ok(&["inspect", "-f", "{{.State.Pid}}", &c.id])
        .parse()
        .unwrap()
}

/// Scheduler policy of every thread of `pid` (field 41 of each task's stat).
fn policies(pid: i32) -> Vec<i64> {
    host_support::thread_stat_field(pid as u32, 41)
        .into_values()
        .collect()
}

/// A batch-class agent burning a CPU.
fn batch_hog(name: &str) -> Container {
    Container::run(
        &unique(name),
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=batch",
        ],
        &["sh", "-c", "while :; do :; done"],
    )
}

/// A fast tick, a short hold and a journal of the test's own.
fn loop_config(state: &tempfile::TempDir) -> sutazai_top::config::Config {
    let mut config = test_config(300);
    config.optimizer.state_dir = state.path().to_path_buf();
    config.detect.hold_ticks = 2;
    config
}

fn send(engine: &RunningEngine, command: Command) {
    let commands = engine.handle.commands.clone();
    engine.runtime.block_on(commands.send(command)).unwrap();
}

#[test]
fn saturation_is_detected_proposed_applied_for_real_and_rolled_back() {
    let _alone = support::cpu_tests_lock();
    let state = tempfile::tempdir().unwrap();
    let config = loop_config(&state);
    let a = batch_hog("hog-a");
    let b = batch_hog("hog-b");
    let before_shares = (shares(&a), shares(&b));
    let pids = [main_pid(&a), main_pid(&b)];
    let before_policies: Vec<Vec<i64>> = pids.iter().map(|&p| policies(p)).collect();

    let mut engine = RunningEngine::start(config);
    let snap = engine.wait_for(Duration::from_secs(30), "a CPU-weight proposal", |s| {
        proposal(s, "batch-cpu-weight")
            .is_some_and(|p| p.status == ProposalStatus::Proposed && p.fix.intents.len() >= 2)
    });
    let weight = proposal(&snap, "batch-cpu-weight").unwrap().clone();
    assert!(!weight.bottleneck.evidence.is_empty());
    let policy = proposal(&snap, "batch-scheduler-policy")
        .expect("the policy fix is proposed beside it")
        .clone();

    // a: apply the weight fix.
    send(&engine, Command::Apply(weight.id));
    let snap = engine.wait_for(Duration::from_secs(20), "weight fix applied", |s| {
        s.proposals.iter().any(|p| {
            p.id == weight.id
                && matches!(
                    p.status,
                    ProposalStatus::Applied { .. }
                        | ProposalStatus::Failed { .. }
                        | ProposalStatus::Stale { .. }
                )
        })
    });
    let status = snap
        .proposals
        .iter()
        .find(|p| p.id == weight.id)
        .unwrap()
        .status
        .clone();
    let ProposalStatus::Applied { batch } = status else {
        panic!(
            "weight fix not applied: {status:?}; notice {:?}",
            snap.notice
        );
    };
    assert_eq!(
        (shares(&a), shares(&b)),
        ("256".to_string(), "256".to_string())
    );
    assert!(snap.changes.active.iter().any(|x| x.batch == batch));

    // a: apply the policy fix to both main processes (every thread).
    send(&engine, Command::Apply(policy.id));
    engine.wait_for(Duration::from_secs(20), "policy fix applied", |s| {
        s.proposals
            .iter()
            .any(|p| p.id == policy.id && matches!(p.status, ProposalStatus::Applied { .. }))
    });
    for pid in pids {
        assert!(
            policies(pid).iter().all(|&p| p == 3),
            "SCHED_BATCH everywhere: {:?}",
            policies(pid)
        );
    }

    // r: roll both back; every value is what it was.
    send(&engine, Command::Rollback(batch));
    engine.wait_for(Duration::from_secs(20), "weight fix rolled back", |s| {
        s.proposals
            .iter()
            .any(|p| p.id == weight.id && matches!(p.status, ProposalStatus::RolledBack { .. }))
    });
    send(&engine, Command::RollbackAll);
    let snap = engine.wait_for(Duration::from_secs(20), "nothing active", |s| {
        s.changes.active.is_empty()
    });
    assert!(
        snap.notice.as_ref().is_some_and(|n| !n.is_error),
        "{:?}",
        snap.notice
    );
    // Docker 20.10 cannot clear shares to "unset" (0): the kernel default 1024 stands for it.
    let normalise = |s: String| if s == "0" { "1024".to_string() } else { s };
    assert_eq!(
        (normalise(shares(&a)), normalise(shares(&b))),
        (normalise(before_shares.0), normalise(before_shares.1))
    );
    let after_policies: Vec<Vec<i64>> = pids.iter().map(|&p| policies(p)).collect();
    assert_eq!(after_policies, before_policies);
}

#[test]
fn auto_fix_applies_and_a_fix_that_does_not_help_rolls_back_on_its_own() {
    let _alone = support::cpu_tests_lock();
    let state = tempfile::tempdir().unwrap();
    let mut config = loop_config(&state);
    config.optimizer.auto_fix = true;
    config.optimizer.validation_secs = 3;
    config.optimizer.cooldown_secs = 60;
    // Three hogs on this host's CPUs: the CPU stays saturated whatever their weights are,
    // so lowering them all cannot lower the host's CPU pressure.
    let hogs: Vec<Container> = ["x", "y", "z"]
        .iter()
        .map(|n| batch_hog(&format!("auto-{n}")))
        .collect();
    let before: Vec<String> = hogs.iter().map(shares).collect();

    let mut engine = RunningEngine::start_managing(config);
    let snap = engine.wait_for(Duration::from_secs(30), "auto-fix applied something", |s| {
        s.proposals
            .iter()
            .any(|p| matches!(p.status, ProposalStatus::Applied { .. }))
    });
    let applied = snap
        .proposals
        .iter()
        .find(|p| matches!(p.status, ProposalStatus::Applied { .. }))
        .unwrap()
        .clone();
    println!(
        "auto-applied: {} (baseline {:?})",
        applied.fix.summary, applied.validation.before
    );
    let snap = engine.wait_for(Duration::from_secs(30), "a verdict", |s| {
        s.proposals
            .iter()
            .any(|p| p.id == applied.id && p.validation.verdict.is_some())
    });
    let judged = snap.proposals.iter().find(|p| p.id == applied.id).unwrap();
    println!(
        "verdict: {:?}, status {:?}, notice {:?}",
        judged.validation.verdict, judged.status, snap.notice
    );
    match judged.validation.verdict.clone().unwrap() {
        sutazai_top::model::Verdict::DidNotHelp { .. } => {
            let snap = engine.wait_for(Duration::from_secs(10), "rolled back on its own", |s| {
                s.proposals.iter().any(|p| {
                    p.id == applied.id && matches!(p.status, ProposalStatus::RolledBack { .. })
                })
            });
            assert!(snap.changes.active.is_empty());
            let normalise = |s: String| if s == "0" { "1024".to_string() } else { s };
            let now: Vec<String> = hogs.iter().map(shares).map(normalise).collect();
            assert_eq!(now, before.into_iter().map(normalise).collect::<Vec<_>>());
        }
        other => {
            panic!("lowering every hog's weight cannot relieve a saturated CPU, yet: {other:?}")
        }
    }
}
