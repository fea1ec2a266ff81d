//! `set`, `journal` and `rollback`: the host changed from the command line, journaled and
//! reversible like everything the engine does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use sutazai_top::config::Config;
use sutazai_top::host::HostRoots;
use sutazai_top::model::{Change, Knob, Target};
use sutazai_top::optimizer::actuators::{
    ContainerActuator, HostActuators, cgroup_file_names, plan_cgroup, plan_container_with,
    plan_process,
};
use sutazai_top::optimizer::journal::{ChangeState, Recovery};
use sutazai_top::optimizer::master::Optimizer;

/// Knobs `set` can turn on a process's threads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KnobName {
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
pub enum SetKnob {
    Named(KnobName),
    CgroupFile(String),
}

pub fn parse_set_knob(text: &str) -> Result<SetKnob, String> {
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

pub fn host_roots(config: &Config) -> HostRoots {
    HostRoots {
        proc: config.host.proc_root.clone(),
        sys: config.host.sys_root.clone(),
    }
}

pub fn open_optimizer(config: &Config) -> anyhow::Result<(Optimizer<HostActuators>, Recovery)> {
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
pub enum SetTarget {
    Process(i32),
    Container(String),
    Cgroup(PathBuf),
}

pub fn set_knob(
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

pub fn rollback(config: &Config, id: Option<u64>) -> anyhow::Result<()> {
    let (mut optimizer, recovery) = open_optimizer(config)?;
    // Lines the journal could not read may record changes still on the host: the rollback
    // cannot see them, so it must not say all is well.
    let damage = sutazai_top::optimizer::view::problems(&recovery);
    let results = match id {
        Some(id) => vec![optimizer.rollback_following(id)],
        None => optimizer.rollback_all_following(),
    };
    if results.is_empty() {
        match damage.is_empty() {
            true => println!("nothing to roll back: no open batch"),
            false => println!("no open batch could be read from the journal"),
        }
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
    for problem in &damage {
        println!("{problem}");
    }
    anyhow::ensure!(
        damage.is_empty(),
        "the journal in {} is damaged: changes recorded on the lines above may still be \
         applied, and nothing was done for them (see `sutazai-top journal`; undo them by hand)",
        config.optimizer.state_dir.display()
    );
    anyhow::ensure!(
        !failed,
        "some changes could not be restored; they stay open in the journal"
    );
    Ok(())
}

pub fn show_journal(config: &Config) -> anyhow::Result<()> {
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
