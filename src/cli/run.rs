//! `sutazai-top run --ksm -- CMD`: start a program with the whole of its memory open to KSM
//! merging (`PR_SET_MEMORY_MERGE`, Linux 6.4+; kept across exec and inherited by its
//! children), for agents that cannot use the pools. The setting belongs to the process
//! started and ends with it; nothing on the host changes.

use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{Context, bail};

/// Set what was asked on this process, then become `command` (returns only on failure).
pub fn exec(ksm: bool, command: &[String], sys_root: &Path) -> anyhow::Result<()> {
    let Some((program, args)) = command.split_first() else {
        bail!("run: no command given (sutazai-top run --ksm -- CMD ARGS...)");
    };
    if !ksm {
        bail!("run: nothing to start it with; --ksm is what run sets");
    }
    merge_all_memory()?;
    let ksm_run = std::fs::read_to_string(sys_root.join("kernel/mm/ksm/run")).unwrap_or_default();
    if ksm_run.trim() != "1" {
        eprintln!(
            "sutazai-top: KSM is not running ({}/kernel/mm/ksm/run = {:?}): the memory of {program} \
             is mergeable, but nothing merges until KSM runs (the optimizer proposes starting it \
             when memory is short; `sutazai-top set` does not change system knobs)",
            sys_root.display(),
            ksm_run.trim()
        );
    }
    let err = std::process::Command::new(program).args(args).exec();
    Err(err).with_context(|| format!("run: cannot start {program}"))
}

/// `prctl(PR_SET_MEMORY_MERGE, 1)`: every present and future anonymous area of this process
/// becomes mergeable.
fn merge_all_memory() -> anyhow::Result<()> {
    // SAFETY: prctl with integer arguments only; it changes a flag of this process's mm.
    let done = unsafe { libc::prctl(libc::PR_SET_MEMORY_MERGE, 1, 0, 0, 0) };
    if done == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match err.raw_os_error() {
        Some(libc::EINVAL) => bail!(
            "run --ksm: this kernel ({}) has no process-wide KSM merging (PR_SET_MEMORY_MERGE \
             needs Linux 6.4 or later, with CONFIG_KSM)",
            kernel.trim()
        ),
        Some(libc::EPERM) => bail!(
            "run --ksm: not allowed (PR_SET_MEMORY_MERGE needs CAP_SYS_RESOURCE: run as root)"
        ),
        _ => Err(err).context("run --ksm: prctl(PR_SET_MEMORY_MERGE)"),
    }
}
