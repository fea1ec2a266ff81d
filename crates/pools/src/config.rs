//! The store's config: `[object_store]` (the socket, the default pool) and `[[pools]]` (more
//! pools, each with a size, a codec for cold objects and a per-agent quota). A bad value is
//! refused while the TOML is parsed, naming its key; [`problem`] checks the rules across keys.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};
use sutazai_config_check::in_range;

use crate::compress::Compression;

/// The name of the pool sized by `shared_memory_size_mb`.
pub const DEFAULT_POOL: &str = "default";

/// `[object_store]`: the shared-memory object store the engine serves to agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreConfig {
    /// Serve the store at all (only an engine that runs for the host does).
    pub enabled: bool,
    /// The Unix socket; empty means `pools.sock` in `[service] runtime_dir`.
    pub socket: PathBuf,
    /// Mode of the socket file: 0o600 lets only root (and the owner) connect.
    #[serde(deserialize_with = "socket_mode")]
    pub socket_mode: u32,
    /// A group given the socket (with a mode such as 0o660), so its members may connect;
    /// empty keeps root's.
    pub socket_group: String,
    /// Size of the default pool in MiB.
    #[serde(deserialize_with = "size_mb")]
    pub shared_memory_size_mb: u64,
    /// Codec of the default pool's cold objects.
    pub compression: Compression,
    /// The most one agent may hold in the default pool, in MiB (0: no quota).
    pub agent_quota_mb: u64,
    /// An object no one has referenced for this long is compressed in the background.
    #[serde(deserialize_with = "cold_after_secs")]
    pub cold_after_secs: u64,
    /// The most objects and segments one client connection may hold (its descriptors).
    #[serde(deserialize_with = "max_objects_per_client")]
    pub max_objects_per_client: usize,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        ObjectStoreConfig {
            enabled: true,
            socket: PathBuf::new(),
            socket_mode: 0o600,
            socket_group: String::new(),
            shared_memory_size_mb: 4096,
            compression: Compression::Lz4,
            agent_quota_mb: 0,
            cold_after_secs: 60,
            max_objects_per_client: 4096,
        }
    }
}

/// One `[[pools]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    #[serde(deserialize_with = "size_mb")]
    pub size_mb: u64,
    #[serde(default)]
    pub compression: Compression,
    /// The most one agent may hold in this pool, in MiB (0: no quota).
    #[serde(default)]
    pub agent_quota_mb: u64,
}

/// One pool as the store runs it (the default one and each `[[pools]]` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub name: String,
    pub capacity: u64,
    pub compression: Compression,
    /// 0: no quota.
    pub agent_quota: u64,
}

pub const MIB: u64 = 1024 * 1024;

impl ObjectStoreConfig {
    /// The default pool, then the configured ones.
    pub fn pools(&self, extra: &[PoolConfig]) -> Vec<PoolSpec> {
        let default = PoolSpec {
            name: DEFAULT_POOL.to_string(),
            capacity: self.shared_memory_size_mb * MIB,
            compression: self.compression,
            agent_quota: self.agent_quota_mb * MIB,
        };
        std::iter::once(default)
            .chain(extra.iter().map(PoolConfig::spec))
            .collect()
    }
}

impl PoolConfig {
    pub fn spec(&self) -> PoolSpec {
        PoolSpec {
            name: self.name.clone(),
            capacity: self.size_mb * MIB,
            compression: self.compression,
            agent_quota: self.agent_quota_mb * MIB,
        }
    }
}

/// What is wrong across keys, naming the entry: `(key, message)`, the key such as
/// `pools[1].name` so the caller can point at its line.
pub fn problem(store: &ObjectStoreConfig, pools: &[PoolConfig]) -> Option<(String, String)> {
    if store.agent_quota_mb > store.shared_memory_size_mb {
        return Some((
            "object_store.agent_quota_mb".into(),
            format!(
                "object_store.agent_quota_mb = {} is more than the pool's shared_memory_size_mb = {}",
                store.agent_quota_mb, store.shared_memory_size_mb
            ),
        ));
    }
    for (i, pool) in pools.iter().enumerate() {
        let key = format!("pools[{i}]");
        if let Some(why) = name_problem(&pool.name) {
            return Some((key, format!("[[pools]] name {:?}: {why}", pool.name)));
        }
        if pools[..i].iter().any(|p| p.name == pool.name) {
            return Some((
                key,
                format!("[[pools]] name {:?} is given twice", pool.name),
            ));
        }
        if pool.agent_quota_mb > pool.size_mb {
            return Some((
                key,
                format!(
                    "[[pools]] {:?}: agent_quota_mb = {} is more than its size_mb = {}",
                    pool.name, pool.agent_quota_mb, pool.size_mb
                ),
            ));
        }
    }
    None
}

/// Why a pool name is refused: it must be 1..=64 of `[A-Za-z0-9._-]`, and not the default's.
pub fn name_problem(name: &str) -> Option<String> {
    if name == DEFAULT_POOL {
        return Some(format!(
            "{DEFAULT_POOL:?} is the pool sized by [object_store] shared_memory_size_mb"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Some("a name is 1 to 64 letters, digits, '.', '_' or '-'".into());
    }
    None
}

fn size_mb<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    // At most 1 TiB: a pool is memory of this host.
    in_range(d, "size_mb", 1..=1024 * 1024)
}

fn socket_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, "socket_mode", 0..=0o777)
}

fn cold_after_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, "cold_after_secs", 1..=86_400)
}

fn max_objects_per_client<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    in_range(d, "max_objects_per_client", 1..=1_000_000)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(Deserialize)]
    struct Both {
        #[serde(default)]
        object_store: ObjectStoreConfig,
        #[serde(default)]
        pools: Vec<PoolConfig>,
    }

    #[test]
    fn pools_parse_with_their_defaults_and_bad_values_name_the_key() {
        let both: Both = toml::from_str(
            "[object_store]\nshared_memory_size_mb = 64\n\
             [[pools]]\nname = \"weights\"\nsize_mb = 128\ncompression = \"zlib\"\nagent_quota_mb = 32\n",
        )
        .unwrap();
        let specs = both.object_store.pools(&both.pools);
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[0].name.as_str(), specs[0].capacity),
            ("default", 64 * MIB)
        );
        assert_eq!(specs[1].compression, Compression::Zlib);
        assert_eq!(specs[1].agent_quota, 32 * MIB);
        assert_eq!(problem(&both.object_store, &both.pools), None);

        for (text, says) in [
            (
                "[[pools]]\nname = \"w\"\nsize_mb = 0\n",
                "size_mb = 0 must be",
            ),
            (
                "[[pools]]\nname = \"w\"\nsize_mb = 1\ncompression = \"zstd\"\n",
                "zstd",
            ),
            ("[object_store]\nsocket_mode = 4095\n", "socket_mode"),
            ("[object_store]\ncold_after_secs = 0\n", "cold_after_secs"),
            ("[[pools]]\nname = \"w\"\n", "size_mb"),
        ] {
            let err = toml::from_str::<Both>(text).err().expect(text).to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn rules_across_keys_name_the_entry() {
        let pool = |name: &str, size_mb, quota| PoolConfig {
            name: name.into(),
            size_mb,
            compression: Compression::Lz4,
            agent_quota_mb: quota,
        };
        let store = ObjectStoreConfig::default();
        let cases = [
            (
                vec![pool("default", 1, 0)],
                "pools[0]",
                "shared_memory_size_mb",
            ),
            (vec![pool("a b", 1, 0)], "pools[0]", "letters"),
            (vec![pool("a", 1, 0), pool("a", 2, 0)], "pools[1]", "twice"),
            (vec![pool("a", 1, 2)], "pools[0]", "more than its size_mb"),
        ];
        for (pools, key, says) in cases {
            let (k, message) = problem(&store, &pools).unwrap();
            assert_eq!(k, key);
            assert!(message.contains(says), "{message}");
        }
    }
}
