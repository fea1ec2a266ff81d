//! Every pool of the store, the client connections and the agent each belongs to.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::Compression;
use crate::config::{DEFAULT_POOL, PoolSpec};
use crate::object::{ClientId, ObjectId, StoreError};
use crate::pool::{Holder, Pool};
use crate::snapshot::PoolsSnapshot;

/// A connected client: its process (from the socket's peer credentials) and its agent.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub pid: Option<i32>,
    pub agent: String,
    /// Named by the engine (a container, an `[[agents]]` entry), not just by its process.
    pub resolved: bool,
}

pub struct Pools {
    pools: Vec<Pool>,
    clients: HashMap<ClientId, ClientInfo>,
    max_held: usize,
    socket: String,
}

/// The most pools, the configured and those clients create.
pub const MAX_POOLS: usize = 64;

impl Pools {
    pub fn new(specs: Vec<PoolSpec>, max_held: usize, socket: &str) -> Pools {
        Pools {
            pools: specs.into_iter().map(Pool::new).collect(),
            clients: HashMap::new(),
            max_held,
            socket: socket.to_string(),
        }
    }

    /// Pool `name` ("" is the default one).
    pub fn pool(&mut self, name: &str) -> Result<&mut Pool, StoreError> {
        let name = if name.is_empty() { DEFAULT_POOL } else { name };
        self.pools
            .iter_mut()
            .find(|p| p.spec.name == name)
            .ok_or_else(|| StoreError::NoPool(name.to_string()))
    }

    /// The pool that holds object `id`.
    pub fn holding(&mut self, id: &ObjectId) -> Result<&mut Pool, StoreError> {
        self.pools
            .iter_mut()
            .find(|p| p.contains(id))
            .ok_or_else(|| StoreError::Unknown(id.hex()))
    }

    pub fn holder(&self, client: ClientId) -> Holder {
        Holder {
            client,
            agent: self
                .clients
                .get(&client)
                .map_or_else(|| format!("client {client}"), |c| c.agent.clone()),
            max_held: self.max_held,
        }
    }

    pub fn connected(&mut self, client: ClientId, info: ClientInfo) {
        self.clients.insert(client, info);
    }

    /// Clients not named as an agent yet, with their pids.
    pub fn unnamed(&self) -> Vec<(ClientId, i32)> {
        self.clients
            .iter()
            .filter(|(_, c)| !c.resolved)
            .filter_map(|(id, c)| Some((*id, c.pid?)))
            .collect()
    }

    /// Name a client's agent (what it holds counts for that agent from now on).
    pub fn name(&mut self, client: ClientId, agent: &str) {
        if let Some(info) = self.clients.get_mut(&client) {
            info.agent = agent.to_string();
            info.resolved = true;
        }
        for pool in &mut self.pools {
            pool.rename(client, agent);
        }
    }

    /// A client went away: everything it held, in every pool, is released.
    pub fn gone(&mut self, client: ClientId) {
        for pool in &mut self.pools {
            pool.client_gone(client);
        }
        self.clients.remove(&client);
    }

    /// `create_pool`: a new pool; asking again for one that exists as asked is no error.
    pub fn create(&mut self, spec: PoolSpec) -> Result<bool, StoreError> {
        if let Some(pool) = self.pools.iter().find(|p| p.spec.name == spec.name) {
            let same =
                pool.spec.capacity == spec.capacity && pool.spec.compression == spec.compression;
            return if same {
                Ok(false)
            } else {
                Err(StoreError::PoolDiffers(spec.name))
            };
        }
        if let Some(why) = crate::config::name_problem(&spec.name) {
            return Err(StoreError::Invalid(format!("pool {:?}: {why}", spec.name)));
        }
        if self.pools.len() >= MAX_POOLS {
            return Err(StoreError::Invalid(format!(
                "{MAX_POOLS} pools exist, the most"
            )));
        }
        self.pools.push(Pool::new(spec));
        Ok(true)
    }

    /// Objects to compress in the background: (pool, id, descriptor, size, codec).
    pub fn cold(
        &self,
        after: Duration,
    ) -> Vec<(String, ObjectId, std::os::fd::OwnedFd, u64, Compression)> {
        let now = Instant::now();
        self.pools
            .iter()
            .flat_map(|pool| {
                pool.cold(now, after).into_iter().map(|(id, fd, size)| {
                    (pool.spec.name.clone(), id, fd, size, pool.spec.compression)
                })
            })
            .collect()
    }

    pub fn snapshot(&self) -> PoolsSnapshot {
        let mut snapshot = PoolsSnapshot {
            socket: self.socket.clone(),
            clients: self.clients.len(),
            ..PoolsSnapshot::default()
        };
        for pool in &self.pools {
            let (figures, agents) = pool.snapshot();
            snapshot.pools.push(figures);
            snapshot.agents.extend(agents);
        }
        snapshot
    }
}
