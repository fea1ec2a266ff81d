//! Configuration: TOML, every key optional with a default, unknown keys rejected.
//!
//! Lookup order: `--config PATH`, then the user's config dir (`sutazai-top/config.toml`),
//! then `/etc/sutazai/config.toml`, else built-in defaults. CLI flags override the file.
//! Every error names the key and, where the file has it, the line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use sutazai_config_check::in_range;

pub use crate::alerts::AlertsConfig;
pub use crate::api::ApiConfig;
pub use crate::containers::{AgentEntry, DockerConfig};
pub use crate::eliminator::DetectConfig;
use crate::engine::EngineConfig;
pub use crate::host::HostConfig;
pub use crate::model::Mode;
pub use crate::optimizer::{OptimizerConfig, SchedulerPolicy, UncleanExit};
pub use sutazai_balancer::BalancerConfig;

pub use crate::coordinator::CoordinatorConfig;
pub use sutazai_cache::CacheConfig;
pub use sutazai_pools::{ObjectStoreConfig, PoolConfig};

/// The shortest tick the engine accepts; faster sampling costs more than it shows.
pub const MIN_INTERVAL_MS: u64 = 250;
/// The longest: an hour (a tick far longer would leave `snapshot` waiting for ever).
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
/// Where reports go unless configured: beside the state, so the path rule holds from the
/// start (the current directory, often an operator's home, would be refused).
pub const DEFAULT_REPORT_DIR: &str = "/var/lib/sutazai-top/reports";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Sampling tick in milliseconds (at least 250).
    #[serde(deserialize_with = "interval_ms")]
    pub interval_ms: u64,
    /// Minutes of history kept for sparklines and trends (1..=1440).
    #[serde(deserialize_with = "history_minutes")]
    pub history_minutes: u64,
    /// Mode at start.
    pub mode: Mode,
    /// How many of the busiest processes each snapshot keeps.
    #[serde(deserialize_with = "top_processes")]
    pub top_processes: usize,
    /// Directory where `e` and `report` write reports; it follows the rule of owned paths.
    #[serde(deserialize_with = "report_dir")]
    pub report_dir: PathBuf,
    pub host: HostConfig,
    pub docker: DockerConfig,
    /// `[[agents]]`: plain processes that count as agents, with what they declare.
    pub agents: Vec<AgentEntry>,
    pub optimizer: OptimizerConfig,
    pub detect: DetectConfig,
    pub log: LogConfig,
    pub api: ApiConfig,
    pub service: ServiceConfig,
    pub alerts: AlertsConfig,
    pub cache: CacheConfig,
    pub balancer: BalancerConfig,
    pub coordinator: CoordinatorConfig,
    /// `[object_store]`: the shared-memory object store served to agents.
    pub object_store: ObjectStoreConfig,
    /// `[[pools]]`: pools beside the default one.
    pub pools: Vec<PoolConfig>,
}

/// `sutazai-top serve`: the engine as a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Holds the pid file whose lock allows one engine per host.
    pub runtime_dir: PathBuf,
    /// Also append logs to this file; empty means stderr only.
    pub log_file: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            runtime_dir: PathBuf::from("/run/sutazai-top"),
            log_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "sutazai_top=debug".
    #[serde(deserialize_with = "log_level")]
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_ms: 1000,
            history_minutes: 10,
            mode: Mode::Conservative,
            top_processes: 25,
            report_dir: PathBuf::from(DEFAULT_REPORT_DIR),
            host: HostConfig::default(),
            docker: DockerConfig::default(),
            agents: Vec::new(),
            optimizer: OptimizerConfig::default(),
            detect: DetectConfig::default(),
            log: LogConfig::default(),
            api: ApiConfig::default(),
            service: ServiceConfig::default(),
            alerts: AlertsConfig::default(),
            cache: CacheConfig::default(),
            balancer: BalancerConfig::default(),
            coordinator: CoordinatorConfig::default(),
            object_store: ObjectStoreConfig::default(),
            pools: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// toml's message names the key, the line and the column.
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Parse a config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: err.to_string().trim_end().to_string(),
        })?;
        // Rules across keys (a backend's pool must exist...) that serde cannot check per key.
        let mut names = std::collections::HashSet::new();
        if let Some(twice) = config.agents.iter().find(|a| !names.insert(&a.name)) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!("[[agents]] name = {:?} is given twice", twice.name),
            });
        }
        // A rule across keys, told with the line it points at when the text spells it so.
        let invalid = |line: Option<usize>, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: match line {
                Some(line) => format!("line {line}: {problem}"),
                None => problem,
            },
        };
        if let Some(problem) = config.balancer.problem() {
            return Err(invalid(line_of(text, &problem), problem));
        }
        let pools = sutazai_pools::config::problem(&config.object_store, &config.pools);
        if let Some((key, problem)) = pools {
            return Err(invalid(pools_line(text, &key), problem));
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// The file to use: the explicit one, else the first that exists of the user's config dir
    /// and /etc/sutazai/config.toml; `None` means built-in defaults.
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(path) = explicit {
            return Some(path.to_path_buf());
        }
        let user = directories::ProjectDirs::from("", "", "sutazai-top")
            .map(|dirs| dirs.config_dir().join("config.toml"));
        user.into_iter()
            .chain(std::iter::once(PathBuf::from("/etc/sutazai/config.toml")))
            .find(|p| p.is_file())
    }

    /// What the engine is started with: its settings, the sections of the parts it wires,
    /// and the report writer for `e`.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            interval_ms: self.interval_ms,
            history_points: self.history_points(),
            mode: self.mode,
            top_processes: self.top_processes,
            report_dir: self.report_dir.clone(),
            report_writer: Some(crate::report::writer()),
            host: self.host.clone(),
            docker: self.docker.clone(),
            agents: self.agents.clone(),
            optimizer: self.optimizer.clone(),
            detect: self.detect.clone(),
            cache: self.cache.clone(),
            balancer: self.balancer.clone(),
            coordinator: self.coordinator.clone(),
            object_store: self.object_store.clone(),
            pools: self.pools.clone(),
            runtime_dir: self.service.runtime_dir.clone(),
        }
    }

    /// Number of history points kept at the configured tick.
    pub fn history_points(&self) -> usize {
        let secs = self.history_minutes.saturating_mul(60_000);
        (secs / self.interval_ms.max(1)).clamp(1, 1_000_000) as usize
    }
}

fn interval_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, "interval_ms", MIN_INTERVAL_MS..=MAX_INTERVAL_MS)
}

fn report_dir<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    sutazai_config_check::non_empty_path(d, "report_dir")
}

fn history_minutes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, "history_minutes", 1..=1440)
}

fn top_processes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    in_range(d, "top_processes", 1..=10_000)
}

/// The line (from 1) a rule across keys points at: `balancer.backends[2]` is the third
/// `[[balancer.backends]]` table, `balancer.outlier.max_ejection_ms` that key's line. `None`
/// where the text does not spell it that way (an inline array, say).
fn line_of(text: &str, problem: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
    for table in ["backends", "pools"] {
        let prefix = format!("balancer.{table}[");
        if let Some(rest) = problem.strip_prefix(&prefix) {
            let index: usize = rest.split(']').next()?.parse().ok()?;
            let header = format!("[[balancer.{table}]]");
            let (at, _) = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.starts_with(&header))
                .nth(index)?;
            return Some(at + 1);
        }
    }
    let key = problem
        .strip_prefix("balancer.outlier.")?
        .split(' ')
        .next()?;
    let at = lines.iter().position(|l| l.starts_with(key))?;
    Some(at + 1)
}

/// The line of a pools rule's key: `pools[2]` is the third `[[pools]]` table, an
/// `object_store.<key>` that key's line.
fn pools_line(text: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
    let found = match key.strip_prefix("pools[") {
        Some(rest) => {
            let index: usize = rest.split(']').next()?.parse().ok()?;
            lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.starts_with("[[pools]]"))
                .nth(index)?
                .0
        }
        None => {
            let name = key.strip_prefix("object_store.")?;
            lines.iter().position(|l| l.starts_with(name))?
        }
    };
    Some(found + 1)
}

/// A tracing filter, checked as the logger will read it.
fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let level = String::deserialize(d)?;
    match tracing_subscriber::EnvFilter::try_new(&level) {
        Ok(_) => Ok(level),
        Err(err) => Err(serde::de::Error::custom(format!(
            "level = {level:?} is not a log filter ({err}); e.g. \"info\" or \"sutazai_top=debug\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_is_the_defaults() {
        let text = include_str!("../config.toml.example");
        let parsed = Config::parse(text, Path::new("config.toml.example")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn pools_rules_name_the_entry_and_its_line() {
        let text = "[object_store]\nshared_memory_size_mb = 64\n\n[[pools]]\nname = \"a\"\n\
                    size_mb = 8\n[[pools]]\nname = \"a\"\nsize_mb = 4\n";
        let err = Config::parse(text, Path::new("x")).unwrap_err().to_string();
        assert!(
            err.contains("line 7: [[pools]] name \"a\" is given twice"),
            "{err}"
        );
        let text = "[object_store]\nshared_memory_size_mb = 64\nagent_quota_mb = 65\n";
        let err = Config::parse(text, Path::new("x")).unwrap_err().to_string();
        assert!(
            err.contains("line 3: object_store.agent_quota_mb = 65"),
            "{err}"
        );
        let config =
            Config::parse("[object_store]\nsocket_mode = 0o660\n", Path::new("x")).unwrap();
        assert_eq!(config.object_store.socket_mode, 0o660);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse(
            "mode = \"balanced\"\n\ninterval_msec = 500\n",
            Path::new("x"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("interval_msec"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let err = Config::parse("interval_ms = 100\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("interval_ms = 100") && err.contains("line 1"),
            "{err}"
        );
        let err = Config::parse("[docker]\nenabled = \"yes\"\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("enabled"), "{err}");
        let err = Config::parse("mode = \"turbo\"\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("turbo") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn agent_entries_declare_as_labels_do_and_bad_ones_are_named() {
        let cfg = Config::parse(
            "[[agents]]\nname = \"llm\"\ncomm = \"llama-server\"\nclass = \"latency\"\n\
             cpus = 2\nmemory = \"4g\"\nnuma = 0\npriority = 7\n",
            Path::new("x"),
        )
        .unwrap();
        let entry = &cfg.agents[0];
        assert_eq!(entry.matcher.comm.as_deref(), Some("llama-server"));
        let need = crate::model::need::need_from_labels(&entry.labels, true)
            .unwrap()
            .unwrap();
        assert_eq!(need.cpus, Some(2.0));
        assert!(
            need.exclusive,
            "a latency agent asking whole CPUs gets them alone"
        );
        assert_eq!(need.memory_bytes, Some(4 << 30));
        assert_eq!(need.numa, Some(0));
        assert_eq!(entry.labels["sutazai.priority"], "7");
        let head = "[[agents]]\nname = \"a\"\n";
        for (body, words) in [
            ("", &["comm, cmdline or cgroup"][..]),
            ("comm = \"a-very-long-command\"\n", &["comm", "15"]),
            ("comm = \"x\"\ncpus = 0\n", &["cpus", "above 0"]),
            ("comm = \"x\"\nmemory = \"4x\"\n", &["memory", "4x"]),
            ("comm = \"x\"\nclass = \"fast\"\n", &["class", "fast"]),
            (
                "comm = \"x\"\ncpus = 1.5\nexclusive = true\n",
                &["exclusive", "whole"],
            ),
            ("cgroup = \"relative/x\"\n", &["cgroup", "absolute"]),
            ("cgroup = \"/\"\n", &["cgroup", "root"]),
            ("comm = \"x\"\ncolour = 1\n", &["colour"]),
        ] {
            let err = Config::parse(&format!("{head}{body}"), Path::new("x"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("at line ") && words.iter().all(|w| err.contains(w)),
                "{body}: {err}"
            );
        }
        let twice = format!("{head}comm = \"x\"\n{head}comm = \"y\"\n");
        let err = Config::parse(&twice, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"a\" is given twice"), "{err}");
    }

    #[test]
    fn detect_keys_are_validated() {
        let cfg = Config::parse(
            "[detect]\nmax_cpu_usage = 0.9\nmax_memory_usage = 1.0\nhold_ticks = 5\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(cfg.detect.max_cpu_usage, 0.9);
        assert_eq!(cfg.detect.max_memory_usage, 1.0);
        assert_eq!(cfg.detect.hold_ticks, 5);
        assert_eq!(cfg.detect.predict_horizon_secs, 300);
        for (text, key) in [
            ("[detect]\nmax_cpu_usage = 0.0\n", "max_cpu_usage"),
            ("[detect]\nmax_cpu_usage = 1.5\n", "max_cpu_usage"),
            ("[detect]\nmax_memory_usage = -0.2\n", "max_memory_usage"),
            ("[detect]\nhold_ticks = 0\n", "hold_ticks"),
        ] {
            let err = Config::parse(text, Path::new("x")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("line 2"), "{err}");
        }
    }

    /// Enumerations and addresses are typed while parsing: a wrong one names the key, its
    /// line and what is allowed, and a right one arrives typed.
    #[test]
    fn typed_values_are_refused_while_parsing() {
        for (text, says) in [
            (
                "[optimizer]\nscheduler_policy = \"SCHED_FIFO\"\n",
                ["SCHED_FIFO", "SCHED_IDLE"],
            ),
            (
                "[balancer]\nalgorithm = \"random\"\n",
                ["random", "peak-ewma"],
            ),
            (
                "[balancer]\n[[balancer.pools]]\nname = \"p\"\nalgorithm = \"fastest\"\npath_prefix = \"/p\"\n",
                ["fastest", "least-connections"],
            ),
            ("[cache]\nl2_policy = \"fifo\"\n", ["fifo", "w-tinylfu"]),
            (
                "[api]\nlisten = \"localhost\"\n",
                ["listen", "127.0.0.1:7878"],
            ),
            (
                "[balancer]\nlisten = \"8080\"\n",
                ["listen", "127.0.0.1:8080"],
            ),
            (
                "[balancer]\nworker_threads = 65\n",
                ["worker_threads = 65", "at most 64"],
            ),
        ] {
            let err = Config::parse(text, Path::new("x")).unwrap_err().to_string();
            // The offending value is on the last line of each text but the pool's.
            let last = text.lines().count() - usize::from(text.contains("path_prefix"));
            assert!(err.contains(&format!("line {last}")), "{text}: {err}");
            for word in says {
                assert!(err.contains(word), "{text}: {err} lacks {word}");
            }
        }
        let text = "[optimizer]\nscheduler_policy = \"SCHED_IDLE\"\n[api]\nlisten = \"127.0.0.1:7878\"\n\
                    [balancer]\nalgorithm = \"round-robin\"\n[cache]\nl1_policy = \"arc\"\n";
        let config = Config::parse(text, Path::new("x")).unwrap();
        assert_eq!(
            config.optimizer.scheduler_policy,
            SchedulerPolicy::SchedIdle
        );
        assert_eq!(config.api.listen, Some("127.0.0.1:7878".parse().unwrap()));
        assert_eq!(
            config.balancer.algorithm,
            sutazai_balancer::pick::Algorithm::RoundRobin
        );
        assert_eq!(config.cache.l1_policy, sutazai_cache::PolicyName::Arc);
    }

    /// What the hardening pass found the config let through (issue 15, item 7).
    #[test]
    fn careless_values_are_refused_naming_the_key_and_line() {
        for (text, says, line) in [
            ("interval_ms = 18446744073709551615\n", "interval_ms", 1),
            ("[log]\nlevel = \"loud=[\"\n", "level", 2),
            ("[api]\nsocket = \"\"\n", "socket is empty", 2),
            ("[optimizer]\nstate_dir = \"\"\n", "state_dir is empty", 2),
            ("report_dir = \"\"\n", "report_dir is empty", 1),
            (
                "[coordinator]\nreserved_cpus = \"0-x\"\n",
                "reserved_cpus: \"0-x\" is not a CPU",
                2,
            ),
            ("[coordinator]\nmin_shared_cpus = 0\n", "min_shared_cpus", 2),
            (
                "[balancer]\nsession_header = \"x-a\\nx-b\"\n",
                "session_header",
                2,
            ),
            (
                "[balancer]\n[[balancer.backends]]\nhost = \"h\"\nport = 1\n[[balancer.backends]]\nhost = \"H\"\nport = 1\n",
                "balancer.backends[1] repeats balancer.backends[0]",
                5,
            ),
            (
                "[balancer.outlier]\nbase_ejection_ms = 5000\nmax_ejection_ms = 1000\n",
                "max_ejection_ms = 1000 is below",
                3,
            ),
            (
                "[balancer]\n[[balancer.pools]]\nname = \"p\"\n",
                "neither header nor path_prefix",
                2,
            ),
        ] {
            let err = Config::parse(text, Path::new("x")).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.contains(&format!("line {line}")), "{text}: {err}");
        }
    }

    #[test]
    fn history_points_follow_the_tick() {
        let cfg = Config {
            interval_ms: 500,
            ..Config::default()
        };
        assert_eq!(cfg.history_points(), 1200);
        assert_eq!(Config::default().history_points(), 600);
    }

    #[test]
    fn alerts_webhook_must_be_plain_http() {
        let ok = Config::parse(
            "[alerts]\nwebhook_url = \"http://127.0.0.1:9093/hook\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(ok.alerts.webhook_url, "http://127.0.0.1:9093/hook");
        for (bad, says) in [
            ("https://am.example/hook", "only http://"),
            ("ftp://x/y", "only http://"),
            ("not a url", "not a URL"),
            ("/just/a/path", "only http://"),
        ] {
            let text = format!("[alerts]\nwebhook_url = {bad:?}\n");
            let err = Config::parse(&text, Path::new("x"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says) && err.contains("line 2"), "{bad}: {err}");
        }
        let err = Config::parse("[alerts]\nqueue = 0\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue = 0"), "{err}");
        let err = Config::parse("[alerts]\nretries = 99\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("retries = 99"), "{err}");
    }
}
