//! Per-thread knobs: CPU affinity, scheduling policy, nice and I/O priority.
//!
//! Every read and write first proves the thread is still the one the change was made for:
//! the process's start time must match and the tid must still be one of its tasks. That check
//! and the system call are not atomic, but the window is a few microseconds and a tid is
//! reused only after the kernel has cycled through the whole pid space.

use std::io::ErrorKind;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

use super::{Actuator, errno_error, invalid, parse_strict_list, unsupported};
use crate::host::processes::{parse_stat, parse_status, policy_name};
use crate::host::{HostRoots, format_cpu_list, parse_cpu_list, read_optional};
use crate::model::{Change, Knob, Target};
use crate::optimizer::change::ActuatorError;

/// ioprio_get/ioprio_set "who" for a single thread (linux/ioprio.h).
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_SHIFT: u32 = 13;
/// The low bits of an I/O priority: the level (0..=7) plus, since Linux 6.5, hint bits.
const IOPRIO_DATA_MASK: libc::c_int = (1 << IOPRIO_CLASS_SHIFT) - 1;
const IOPRIO_LEVEL_MASK: libc::c_int = 0x7;
const IOPRIO_CLASS_NONE: libc::c_int = 0;
const IOPRIO_CLASS_RT: libc::c_int = 1;
const IOPRIO_CLASS_BE: libc::c_int = 2;
const IOPRIO_CLASS_IDLE: libc::c_int = 3;
const NICE_RANGE: std::ops::RangeInclusive<i32> = -20..=19;
/// The policies a change may set. Real-time policies are excluded: restoring one needs its
/// priority (and runtime/deadline for SCHED_DEADLINE), which a policy name does not carry.
const SETTABLE_POLICIES: [(&str, libc::c_int); 3] = [
    ("SCHED_OTHER", libc::SCHED_OTHER),
    ("SCHED_BATCH", libc::SCHED_BATCH),
    ("SCHED_IDLE", libc::SCHED_IDLE),
];

/// Affinity, policy, nice and I/O priority of threads. The roots locate /proc for identity
/// checks and affinity reads (and sys for the online CPUs); the system calls act on the
/// running kernel, so fixture roots only make sense for tests that expect `Gone`.
#[derive(Debug, Clone)]
pub struct ThreadActuator {
    pub roots: HostRoots,
}

/// The identity a thread target carries.
#[derive(Debug, Clone, Copy)]
struct ThreadId {
    pid: i32,
    tid: i32,
    start_time: u64,
}

impl ThreadActuator {
    pub fn new(roots: HostRoots) -> Self {
        ThreadActuator { roots }
    }

    /// The thread's tid once its identity is confirmed, else `Gone`.
    fn live_tid(&self, target: &Target, knob: &Knob) -> Result<i32, ActuatorError> {
        let id = thread_id(target, knob)?;
        let start_time = process_start_time(&self.roots, id.pid)?;
        if start_time != id.start_time {
            return Err(ActuatorError::Gone(format!(
                "process {} was replaced (start time differs)",
                id.pid
            )));
        }
        if !self.task_dir(id.pid).join(id.tid.to_string()).exists() {
            return Err(ActuatorError::Gone(format!(
                "thread {} of process {} has exited",
                id.tid, id.pid
            )));
        }
        Ok(id.tid)
    }

    fn task_dir(&self, pid: i32) -> PathBuf {
        self.roots.proc.join(pid.to_string()).join("task")
    }

    fn read_affinity(&self, target: &Target, tid: i32) -> Result<String, ActuatorError> {
        let Target::Thread { pid, .. } = target else {
            return Err(unsupported(target, &Knob::Affinity));
        };
        let path = self.task_dir(*pid).join(tid.to_string()).join("status");
        let text = std::fs::read_to_string(&path).map_err(|err| match err.kind() {
            ErrorKind::NotFound => ActuatorError::Gone(format!("thread {tid} has exited")),
            _ => ActuatorError::Io(format!("cannot read {}: {err}", path.display())),
        })?;
        let list = parse_status(&text).cpus_allowed_list.ok_or_else(|| {
            ActuatorError::Io(format!("no Cpus_allowed_list in {}", path.display()))
        })?;
        Ok(format_cpu_list(&parse_cpu_list(&list)))
    }

    /// The CPUs that may be named in an affinity: the online ones when sysfs says, else
    /// whatever the kernel's CPU mask can hold.
    fn online_cpus(&self) -> Option<Vec<u32>> {
        let text = read_optional(&self.roots.sys.join("devices/system/cpu/online"))?;
        let cpus = parse_cpu_list(&text);
        (!cpus.is_empty()).then_some(cpus)
    }

    fn write_affinity(&self, tid: i32, value: &str) -> Result<(), ActuatorError> {
        let cpus = parse_affinity(value)?;
        if let Some(online) = self.online_cpus()
            && let Some(offline) = cpus.iter().find(|cpu| !online.contains(cpu))
        {
            return Err(invalid(
                &Knob::Affinity,
                value,
                format!("cpu {offline} is not online"),
            ));
        }
        let mut set = CpuSet::new();
        for cpu in &cpus {
            let index = usize::try_from(*cpu).unwrap_or(usize::MAX);
            set.set(index)
                .map_err(|_| invalid(&Knob::Affinity, value, "cpu id beyond the kernel mask"))?;
        }
        sched_setaffinity(Pid::from_raw(tid), &set).map_err(|errno| match errno {
            // The thread's cpuset allows none of these CPUs.
            Errno::EINVAL => invalid(&Knob::Affinity, value, "not allowed by the thread's cpuset"),
            other => errno_error(other, &format!("sched_setaffinity({tid})")),
        })
    }
}

impl Actuator for ThreadActuator {
    fn read(&self, target: &Target, knob: &Knob) -> Result<String, ActuatorError> {
        let tid = self.live_tid(target, knob)?;
        match knob {
            Knob::Affinity => self.read_affinity(target, tid),
            Knob::Policy => read_policy(tid).map(|raw| policy_name(raw.unsigned_abs())),
            Knob::Nice => read_nice(tid).map(|nice| nice.to_string()),
            Knob::IoPriority => read_ioprio(tid).map(format_ioprio),
            _ => Err(unsupported(target, knob)),
        }
    }

    fn write(&self, target: &Target, knob: &Knob, value: &str) -> Result<(), ActuatorError> {
        // Values are checked before the identity so a bad value never depends on the target.
        validate(knob, value)?;
        let tid = self.live_tid(target, knob)?;
        match knob {
            Knob::Affinity => self.write_affinity(tid, value),
            Knob::Policy => write_policy(tid, value),
            Knob::Nice => write_nice(tid, value),
            Knob::IoPriority => write_ioprio(tid, value),
            _ => Err(unsupported(target, knob)),
        }
    }

    fn same_value(&self, knob: &Knob, wrote: &str, read: &str) -> bool {
        match (canonical(knob, wrote), canonical(knob, read)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

/// One change per thread of process `pid`, each with the thread's current value as
/// `before` and the process's start time in its identity. `after` is validated first and
/// stored in canonical form ("0,1" becomes "0-1"). Threads that exit while planning are
/// left out; a process that is gone is `Gone`. A policy change on a process with a
/// real-time thread is `Refused`, since undoing it could not restore the RT priority.
pub fn plan_process(
    roots: &HostRoots,
    pid: i32,
    knob: Knob,
    after: &str,
) -> Result<Vec<Change>, ActuatorError> {
    validate(&knob, after)?;
    let after = canonical(&knob, after).unwrap_or_else(|| after.trim().to_string());
    let actuator = ThreadActuator::new(roots.clone());
    let start_time = process_start_time(roots, pid)?;
    let mut changes = Vec::new();
    for tid in list_tids(&actuator, pid)? {
        let target = Target::Thread {
            pid,
            tid,
            start_time,
        };
        match actuator.read(&target, &knob) {
            Ok(before) => {
                if knob == Knob::Policy && policy_value(&before).is_none() {
                    return Err(ActuatorError::Refused(format!(
                        "thread {tid} of process {pid} runs {before}; it is left alone"
                    )));
                }
                changes.push(Change {
                    target,
                    knob: knob.clone(),
                    before,
                    after: after.clone(),
                });
            }
            Err(ActuatorError::Gone(why)) => tracing::debug!(pid, tid, why, "thread left"),
            Err(other) => return Err(other),
        }
    }
    if changes.is_empty() {
        return Err(ActuatorError::Gone(format!(
            "process {pid} has no threads left"
        )));
    }
    Ok(changes)
}

/// The tids of process `pid`, from proc/<pid>/task.
fn list_tids(actuator: &ThreadActuator, pid: i32) -> Result<Vec<i32>, ActuatorError> {
    let dir = actuator.task_dir(pid);
    let entries = std::fs::read_dir(&dir)
        .map_err(|_| ActuatorError::Gone(format!("process {pid} has exited")))?;
    let mut tids: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|tid| *tid > 0)
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// The start time (stat field 22) of process `pid`, or `Gone`.
pub(crate) fn process_start_time(roots: &HostRoots, pid: i32) -> Result<u64, ActuatorError> {
    let path = roots.proc.join(pid.to_string()).join("stat");
    let bytes = std::fs::read(&path).map_err(|err| match err.kind() {
        ErrorKind::NotFound => ActuatorError::Gone(format!("process {pid} has exited")),
        // ESRCH: the process exited while the file was being read.
        _ if err.raw_os_error() == Some(libc::ESRCH) => {
            ActuatorError::Gone(format!("process {pid} has exited"))
        }
        _ => ActuatorError::Io(format!("cannot read {}: {err}", path.display())),
    })?;
    parse_stat(&String::from_utf8_lossy(&bytes))
        .map(|stat| stat.start_time)
        .ok_or_else(|| ActuatorError::Gone(format!("cannot confirm process {pid}: bad stat")))
}

/// The thread identity of a target. pid and tid must be positive: 0 would make the system
/// calls act on this very process.
fn thread_id(target: &Target, knob: &Knob) -> Result<ThreadId, ActuatorError> {
    match *target {
        Target::Thread {
            pid,
            tid,
            start_time,
        } if pid > 0 && tid > 0 => Ok(ThreadId {
            pid,
            tid,
            start_time,
        }),
        Target::Thread { pid, tid, .. } => Err(ActuatorError::InvalidValue {
            knob: super::knob_name(knob),
            value: format!("pid {pid} tid {tid}"),
            why: "pid and tid must be positive".to_string(),
        }),
        _ => Err(unsupported(target, knob)),
    }
}

/// Reject a value the knob cannot take, before anything is touched.
fn validate(knob: &Knob, value: &str) -> Result<(), ActuatorError> {
    match knob {
        Knob::Affinity => parse_affinity(value).map(|_| ()),
        Knob::Policy => policy_value(value)
            .map(|_| ())
            .ok_or_else(|| invalid(knob, value, "only SCHED_OTHER, SCHED_BATCH, SCHED_IDLE")),
        Knob::Nice => parse_nice(value).map(|_| ()),
        Knob::IoPriority => parse_ioprio(value).map(|_| ()),
        _ => Err(invalid(knob, value, "not a thread knob")),
    }
}

/// The one spelling of a value, so "0,1" equals "0-1" and "+5" equals "5"; `None` when the
/// value is not one the knob knows.
fn canonical(knob: &Knob, value: &str) -> Option<String> {
    match knob {
        Knob::Affinity => parse_affinity(value)
            .ok()
            .map(|cpus| format_cpu_list(&cpus)),
        Knob::Policy => {
            let name = value.trim();
            name.starts_with("SCHED_").then(|| name.to_string())
        }
        Knob::Nice => parse_nice(value).ok().map(|nice| nice.to_string()),
        Knob::IoPriority => parse_ioprio(value).ok().map(format_ioprio),
        _ => None,
    }
}

/// A CPU list, strictly: every part must be "N" or "A-B" with A <= B, and at least one CPU.
fn parse_affinity(value: &str) -> Result<Vec<u32>, ActuatorError> {
    let max = u32::try_from(CpuSet::count().saturating_sub(1)).unwrap_or(u32::MAX);
    parse_strict_list(&Knob::Affinity, value, max, "CPU")
}

fn parse_nice(value: &str) -> Result<i32, ActuatorError> {
    value
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|nice| NICE_RANGE.contains(nice))
        .ok_or_else(|| invalid(&Knob::Nice, value, "a whole number from -20 to 19"))
}

/// A settable policy's number; `None` for real-time, unknown or misspelt names.
fn policy_value(name: &str) -> Option<libc::c_int> {
    SETTABLE_POLICIES
        .iter()
        .find(|(known, _)| *known == name.trim())
        .map(|(_, value)| *value)
}

/// "rt/N", "be/N" (N 0..=7), "idle" or "none" as the kernel's encoded I/O priority.
fn parse_ioprio(value: &str) -> Result<libc::c_int, ActuatorError> {
    let bad = || {
        invalid(
            &Knob::IoPriority,
            value,
            "\"rt/N\" or \"be/N\" (N 0-7), \"idle\" or \"none\"",
        )
    };
    let encode = |class: libc::c_int, level: libc::c_int| (class << IOPRIO_CLASS_SHIFT) | level;
    match value.trim() {
        "none" => Ok(encode(IOPRIO_CLASS_NONE, 0)),
        "idle" => Ok(encode(IOPRIO_CLASS_IDLE, 0)),
        other => {
            let (class, level) = other.split_once('/').ok_or_else(bad)?;
            let class = match class {
                "rt" => IOPRIO_CLASS_RT,
                "be" => IOPRIO_CLASS_BE,
                _ => return Err(bad()),
            };
            let level = level
                .parse::<libc::c_int>()
                .ok()
                .filter(|l| (0..=7).contains(l));
            level.map(|level| encode(class, level)).ok_or_else(bad)
        }
    }
}

/// An encoded I/O priority in the notation `parse_ioprio` reads. Hint bits (Linux 6.5+)
/// are not part of the notation and are dropped with a debug log.
fn format_ioprio(raw: libc::c_int) -> String {
    let class = raw >> IOPRIO_CLASS_SHIFT;
    let data = raw & IOPRIO_DATA_MASK;
    let level = data & IOPRIO_LEVEL_MASK;
    if data != level {
        tracing::debug!(raw, "ioprio hint bits ignored");
    }
    match class {
        IOPRIO_CLASS_RT => format!("rt/{level}"),
        IOPRIO_CLASS_BE => format!("be/{level}"),
        IOPRIO_CLASS_IDLE => "idle".to_string(),
        _ => "none".to_string(),
    }
}

/// The thread's policy without the reset-on-fork flag.
fn read_policy(tid: i32) -> Result<libc::c_int, ActuatorError> {
    read_policy_with_flags(tid).map(|raw| raw & !libc::SCHED_RESET_ON_FORK)
}

fn read_policy_with_flags(tid: i32) -> Result<libc::c_int, ActuatorError> {
    // SAFETY: sched_getscheduler takes a plain tid and touches no memory of ours.
    let raw = unsafe { libc::sched_getscheduler(tid) };
    if raw < 0 {
        return Err(errno_error(
            Errno::last(),
            &format!("sched_getscheduler({tid})"),
        ));
    }
    Ok(raw)
}

fn write_policy(tid: i32, value: &str) -> Result<(), ActuatorError> {
    let wanted = policy_value(value).ok_or_else(|| {
        invalid(
            &Knob::Policy,
            value,
            "only SCHED_OTHER, SCHED_BATCH, SCHED_IDLE",
        )
    })?;
    let current = read_policy_with_flags(tid)?;
    let current_policy = current & !libc::SCHED_RESET_ON_FORK;
    if !SETTABLE_POLICIES.iter().any(|(_, p)| *p == current_policy) {
        return Err(ActuatorError::Refused(format!(
            "thread {tid} runs {}; its priority could not be restored",
            policy_name(current_policy.unsigned_abs())
        )));
    }
    // Keep the thread's reset-on-fork flag: it is not ours to change.
    let policy = wanted | (current & libc::SCHED_RESET_ON_FORK);
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call; the kernel only reads it.
    let rc = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if rc != 0 {
        return Err(errno_error(
            Errno::last(),
            &format!("sched_setscheduler({tid})"),
        ));
    }
    Ok(())
}

fn read_nice(tid: i32) -> Result<i32, ActuatorError> {
    // -1 is a valid nice, so only errno tells a failure apart.
    Errno::clear();
    // SAFETY: getpriority takes plain integers and touches no memory of ours.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid.unsigned_abs()) };
    if nice == -1 && Errno::last_raw() != 0 {
        return Err(errno_error(Errno::last(), &format!("getpriority({tid})")));
    }
    Ok(nice)
}

fn write_nice(tid: i32, value: &str) -> Result<(), ActuatorError> {
    let nice = parse_nice(value)?;
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid.unsigned_abs(), nice) };
    if rc != 0 {
        return Err(errno_error(Errno::last(), &format!("setpriority({tid})")));
    }
    Ok(())
}

fn read_ioprio(tid: i32) -> Result<libc::c_int, ActuatorError> {
    // SAFETY: ioprio_get takes two integers and touches no memory of ours.
    let raw = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    if raw < 0 {
        return Err(errno_error(Errno::last(), &format!("ioprio_get({tid})")));
    }
    libc::c_int::try_from(raw)
        .map_err(|_| ActuatorError::Io(format!("ioprio_get({tid}) out of range")))
}

fn write_ioprio(tid: i32, value: &str) -> Result<(), ActuatorError> {
    let ioprio = parse_ioprio(value)?;
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, ioprio) };
    if rc != 0 {
        return Err(errno_error(Errno::last(), &format!("ioprio_set({tid})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_invalid<T: std::fmt::Debug>(result: Result<T, ActuatorError>) -> bool {
        matches!(result, Err(ActuatorError::InvalidValue { .. }))
    }

    #[test]
    fn affinity_lists_are_parsed_strictly() {
        assert_eq!(parse_affinity("0-2,5").ok(), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_affinity(" 1,0,1 ").ok(), Some(vec![0, 1]));
        for bad in ["", " ", "x", "0,x", "3-1", "0,,1", "-1", "1-", "99999"] {
            assert!(is_invalid(parse_affinity(bad)), "{bad:?} accepted");
        }
        assert_eq!(canonical(&Knob::Affinity, "1,0"), Some("0-1".to_string()));
    }

    #[test]
    fn io_priorities_round_trip() {
        assert_eq!(parse_ioprio("be/7").ok(), Some((2 << 13) | 7));
        assert_eq!(parse_ioprio("rt/0").ok(), Some(1 << 13));
        assert_eq!(parse_ioprio("idle").ok(), Some(3 << 13));
        assert_eq!(parse_ioprio("none").ok(), Some(0));
        for text in ["be/7", "rt/0", "idle", "none", "be/4"] {
            assert_eq!(
                parse_ioprio(text).ok().map(format_ioprio).as_deref(),
                Some(text)
            );
        }
        for bad in ["be/8", "be/9", "be/-1", "xx/1", "be", "", "idle/3", "be/"] {
            assert!(is_invalid(parse_ioprio(bad)), "{bad:?} accepted");
        }
        // Hint bits (6.5+) are dropped, the class and level kept.
        assert_eq!(format_ioprio((2 << 13) | (1 << 3) | 5), "be/5");
    }

    #[test]
    fn nice_and_policy_values_are_bounded() {
        assert_eq!(parse_nice("-20").ok(), Some(-20));
        assert_eq!(parse_nice("+5").ok(), Some(5));
        assert!(is_invalid(parse_nice("20")));
        assert!(is_invalid(parse_nice("99")));
        assert!(is_invalid(parse_nice("five")));
        assert_eq!(policy_value("SCHED_BATCH"), Some(libc::SCHED_BATCH));
        assert_eq!(policy_value("SCHED_FIFO"), None);
        assert_eq!(policy_value("batch"), None);
    }

    #[test]
    fn zero_ids_never_reach_a_system_call() {
        let actuator = ThreadActuator::new(HostRoots::default());
        let target = Target::Thread {
            pid: 0,
            tid: 0,
            start_time: 0,
        };
        assert!(is_invalid(actuator.write(&target, &Knob::Nice, "5")));
        assert!(is_invalid(actuator.read(&target, &Knob::Nice)));
    }
}
