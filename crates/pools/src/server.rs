//! The store on a Unix socket: one thread per client (agents are few and long-lived), the
//! pools behind one lock that no copy, hash or codec runs under. A client's references are
//! released when its connection ends, however it ends. A background thread compresses cold
//! objects.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::Compression;
use crate::config::PoolSpec;
use crate::memfd::{self, ReadMap};
use crate::object::{ClientId, ObjectId, StoreError};
use crate::pool::{Found, hash_fd, memfd_name};
use crate::pools::{ClientInfo, Pools};
use crate::snapshot::PoolsSnapshot;
use crate::wire::{self, STATUS_ERROR, STATUS_OK};

/// The most clients connected at once; past it a connection is told why and closed.
pub const MAX_CLIENTS: usize = 256;

/// Names the agent a client process belongs to (by its pid, from the socket's peer
/// credentials); the engine maps pids to containers and `[[agents]]`. `None`: no agent
/// known for it (yet): the client is named by its process, and asked about again each second.
pub type AgentOf = Arc<dyn Fn(i32) -> Option<String> + Send + Sync>;

/// What a server is started with.
#[derive(Clone)]
pub struct ServerConfig {
    pub socket: PathBuf,
    /// Mode of the socket file (0o600: root only).
    pub mode: u32,
    /// A group given the socket, so that its members may connect (with a mode like 0o660).
    pub group: Option<u32>,
    pub pools: Vec<PoolSpec>,
    pub max_held_per_client: usize,
    /// An unreferenced object idle this long is compressed in the background.
    pub cold_after: Duration,
    pub agent_of: AgentOf,
}

impl ServerConfig {
    /// One pool, agents named by pid: for tests and small uses.
    pub fn single(socket: PathBuf, capacity: u64) -> ServerConfig {
        ServerConfig {
            socket,
            mode: 0o600,
            group: None,
            pools: vec![PoolSpec {
                name: crate::config::DEFAULT_POOL.into(),
                capacity,
                compression: Compression::Lz4,
                agent_quota: 0,
            }],
            max_held_per_client: 4096,
            cold_after: Duration::from_secs(60),
            agent_of: Arc::new(|_| None),
        }
    }
}

/// What the accept loop, the client threads and the compressor share.
struct Shared {
    pools: Mutex<Pools>,
    /// Each client's stream, to end them all when the server stops.
    streams: Mutex<HashMap<ClientId, UnixStream>>,
    stopping: AtomicBool,
}

/// A running server; [`Server::stop`] (or dropping it) ends every connection.
pub struct Server {
    shared: Arc<Shared>,
    socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another store answers on {0}: one engine serves the pools per socket")]
    InUse(PathBuf),
    #[error("pools socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Server {
    /// Bind the socket (a stale one from an earlier run is replaced, a live one refused, any
    /// other file left alone and refused) and serve on threads of its own. Its directory
    /// must exist: the caller checks it (the engine holds it to the rule of owned paths).
    pub fn start(config: &ServerConfig) -> Result<Server, StartError> {
        let path = &config.socket;
        let io = |source| StartError::Socket {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(io(std::io::Error::other("exists and is not a socket")));
            }
            Ok(_) if UnixStream::connect(path).is_ok() => {
                return Err(StartError::InUse(path.clone()));
            }
            // A stale socket from an earlier run: nothing answers on it.
            Ok(_) => std::fs::remove_file(path).map_err(io)?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.mode)).map_err(io)?;
        if let Some(gid) = config.group {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(|e| io(e.into()))?;
        }
        let shared = Arc::new(Shared {
            pools: Mutex::new(Pools::new(
                config.pools.clone(),
                config.max_held_per_client,
                &path.display().to_string(),
            )),
            streams: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        });
        let (accepting, agent_of) = (shared.clone(), config.agent_of.clone());
        std::thread::Builder::new()
            .name("pools-accept".into())
            .spawn(move || accept(listener, accepting, agent_of))
            .map_err(io)?;
        let (background, after, agent_of) =
            (shared.clone(), config.cold_after, config.agent_of.clone());
        std::thread::Builder::new()
            .name("pools-background".into())
            .spawn(move || each_second(&background, after, &agent_of))
            .map_err(io)?;
        Ok(Server {
            shared,
            socket: path.clone(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn snapshot(&self) -> PoolsSnapshot {
        lock(&self.shared.pools).snapshot()
    }

    /// The pools themselves (tests look inside).
    pub fn pools(&self) -> MutexGuard<'_, Pools> {
        lock(&self.shared.pools)
    }

    /// Stop accepting, end every connection (its client sees the store gone) and remove
    /// the socket. Objects go with the store: clients must put them again.
    pub fn stop(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = UnixStream::connect(&self.socket); // wakes the accept loop
        let _ = std::fs::remove_file(&self.socket);
        for stream in lock(&self.shared.streams).values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves the maps consistent (each change is made whole under the lock).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept(listener: UnixListener, shared: Arc<Shared>, agent_of: AgentOf) {
    static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%e, "pools: accept failed");
                continue;
            }
        };
        if lock(&shared.streams).len() >= MAX_CLIENTS {
            let why = format!("{MAX_CLIENTS} clients are connected, the most at once");
            let _ = wire::write_frame(&mut stream, STATUS_ERROR, why.as_bytes());
            continue;
        }
        let client = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let pid = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            .ok()
            .map(|c| c.pid());
        let agent = pid.and_then(|pid| agent_of(pid));
        let info = ClientInfo {
            pid,
            resolved: agent.is_some(),
            agent: agent.unwrap_or_else(|| by_process(client, pid)),
        };
        lock(&shared.pools).connected(client, info);
        if let Ok(copy) = stream.try_clone() {
            lock(&shared.streams).insert(client, copy);
        }
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pools-client-{client}"))
            .spawn(move || {
                serve(&mut stream, client, &shared);
                lock(&shared.pools).gone(client);
                lock(&shared.streams).remove(&client);
            });
        if let Err(e) = spawned {
            tracing::warn!(%e, "pools: no thread for a client");
        }
    }
}

/// The longest body of an op other than a put: an id or a size and a pool's name.
const SMALL_BODY: usize = 8 + 1 + 1 + 255;

/// Answer one client's requests until it goes, or sends what cannot be trusted.
fn serve(stream: &mut UnixStream, client: ClientId, shared: &Shared) {
    loop {
        let (op, length, fd) = match wire::read_head_with_fd(stream) {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                let _ = wire::write_frame(stream, STATUS_ERROR, e.to_string().as_bytes());
                return;
            }
        };
        let known = (wire::OP_PUT..=wire::OP_CREATE_POOL).contains(&op);
        if !known || (op != wire::OP_PUT && length > SMALL_BODY) {
            // Garbage: after it, nothing on this stream can be trusted.
            let why = format!("unknown op {op} or a {length}-byte body for it");
            let _ = wire::write_frame(stream, STATUS_ERROR, why.as_bytes());
            return;
        }
        let answered = if op == wire::OP_PUT {
            match put_bytes(stream, client, shared, length) {
                Some(answer) => answer,
                None => return, // it went half-way: nothing was stored
            }
        } else {
            let mut body = vec![0u8; length];
            if stream.read_exact(&mut body).is_err() {
                return;
            }
            answer(stream, client, shared, op, &body, fd)
        };
        if answered.is_err() {
            return;
        }
    }
}

/// A put of bytes on the stream: the pool's name, then the bytes. `None` when the stream
/// broke before the whole object arrived.
fn put_bytes(
    stream: &mut UnixStream,
    client: ClientId,
    shared: &Shared,
    length: usize,
) -> Option<std::io::Result<()>> {
    if length == 0 {
        let _ = refuse(stream, &StoreError::Invalid("a put names a pool".into()));
        return None; // the next byte would be another frame's: closed
    }
    let mut n = [0u8; 1];
    stream.read_exact(&mut n).ok()?;
    let Some(size) = length.checked_sub(1 + n[0] as usize) else {
        let _ = refuse(
            stream,
            &StoreError::Invalid("a pool name longer than its frame".into()),
        );
        return None;
    };
    let mut name = vec![0u8; n[0] as usize];
    stream.read_exact(&mut name).ok()?;
    let name = String::from_utf8_lossy(&name).into_owned();
    let capacity = lock(&shared.pools).pool(&name).map(|p| p.spec.capacity);
    let refusal = match capacity {
        Err(e) => Some(e),
        Ok(capacity) if size as u64 > capacity => Some(
            lock(&shared.pools)
                .pool(&name)
                .map_or_else(|e| e, |p| p.too_large(size as u64)),
        ),
        Ok(_) => None,
    };
    if let Some(refusal) = refusal {
        // Drained, refused with the reason; the client stays.
        wire::skip(stream, size).ok()?;
        return Some(refuse(stream, &refusal));
    }
    let mut bytes = vec![0u8; size];
    stream.read_exact(&mut bytes).ok()?;
    // Hashed, and copied into a sealed memfd, outside the lock (only when new).
    let id = ObjectId::of(&bytes);
    let put = store_new(shared, client, &name, id, &bytes);
    Some(match put {
        Ok((id, existed)) => put_reply(stream, &id, size as u64, existed),
        Err(e) => refuse(stream, &e),
    })
}

/// Reference object `id` if the pool has it, else store `bytes` (hashing to `id`) as new;
/// whether it was there already.
fn store_new(
    shared: &Shared,
    client: ClientId,
    pool: &str,
    id: ObjectId,
    bytes: &[u8],
) -> Result<(ObjectId, bool), StoreError> {
    {
        let mut pools = lock(&shared.pools);
        let who = pools.holder(client);
        let pool = pools.pool(pool)?;
        if pool.contains(&id) {
            pool.put_sealed_existing(&who, id)?;
            return Ok((id, true));
        }
    }
    let fd = memfd::sealed_with(&memfd_name(&id), bytes).map_err(StoreError::Memory)?;
    let mut pools = lock(&shared.pools);
    let who = pools.holder(client);
    let existed = pools
        .pool(pool)?
        .put_sealed(&who, id, fd, bytes.len() as u64)?;
    Ok((id, existed))
}

fn answer(
    stream: &mut UnixStream,
    client: ClientId,
    shared: &Shared,
    op: u8,
    body: &[u8],
    fd: Option<OwnedFd>,
) -> std::io::Result<()> {
    let result = match op {
        wire::OP_GET | wire::OP_RELEASE => match <[u8; 32]>::try_from(body).map(ObjectId) {
            Err(_) => Err(StoreError::Invalid("an id is 32 bytes".into())),
            Ok(id) if op == wire::OP_GET => return get(stream, client, shared, &id),
            Ok(id) => {
                let mut pools = lock(&shared.pools);
                pools
                    .holding(&id)
                    .and_then(|p| p.release(client, &id))
                    .map(|()| Vec::new())
            }
        },
        wire::OP_PUT_FD => match (wire::split_pool(body), fd) {
            (Some((name, [])), Some(fd)) => put_fd(client, shared, name, fd),
            (_, None) => Err(StoreError::Invalid(
                "a put from a descriptor carries one".into(),
            )),
            _ => Err(StoreError::Invalid(
                "a put from a descriptor names a pool only".into(),
            )),
        },
        wire::OP_ALLOCATE => match sized(body) {
            Some((size, name)) => {
                let mut pools = lock(&shared.pools);
                let who = pools.holder(client);
                let made = pools.pool(name).and_then(|p| p.allocate(&who, size));
                drop(pools);
                match made {
                    Ok((segment, fd)) => {
                        return wire::write_frame_with_fd(
                            stream,
                            STATUS_OK,
                            &segment.to_le_bytes(),
                            fd.as_fd(),
                        );
                    }
                    Err(e) => Err(e),
                }
            }
            None => Err(StoreError::Invalid(
                "allocate: a u64 size and a pool".into(),
            )),
        },
        wire::OP_SEAL => match sized(body) {
            Some((segment, name)) => {
                let mut pools = lock(&shared.pools);
                let who = pools.holder(client);
                match pools.pool(name).and_then(|p| p.seal_segment(&who, segment)) {
                    Ok((id, existed)) => {
                        let size = pools
                            .holding(&id)
                            .ok()
                            .and_then(|p| p.size(&id))
                            .unwrap_or(0);
                        drop(pools);
                        return put_reply(stream, &id, size, existed);
                    }
                    Err(e) => Err(e),
                }
            }
            None => Err(StoreError::Invalid("seal: a u64 segment and a pool".into())),
        },
        wire::OP_CREATE_POOL => create_pool(shared, body).map(|created| vec![u8::from(created)]),
        _ => {
            let snapshot = lock(&shared.pools).snapshot();
            Ok(stats_lines(&snapshot).into_bytes())
        }
    };
    match result {
        Ok(reply) => wire::write_frame(stream, STATUS_OK, &reply),
        Err(e) => refuse(stream, &e),
    }
}

/// A get: the descriptor of a ready object; a compressed one is decompressed (outside the
/// lock) into a new sealed memfd first.
fn get(
    stream: &mut UnixStream,
    client: ClientId,
    shared: &Shared,
    id: &ObjectId,
) -> std::io::Result<()> {
    for _ in 0..3 {
        let mut pools = lock(&shared.pools);
        let who = pools.holder(client);
        let found = pools.holding(id).and_then(|p| p.get(&who, id));
        drop(pools);
        let (packed, size, codec) = match found {
            Ok(Found::Ready(fd, size)) => {
                return wire::write_frame_with_fd(
                    stream,
                    STATUS_OK,
                    &size.to_le_bytes(),
                    fd.as_fd(),
                );
            }
            Ok(Found::Packed(packed, size, codec)) => (packed, size, codec),
            Err(e) => return refuse(stream, &e),
        };
        let thawed = usize::try_from(size)
            .map_err(|_| "too large".to_string())
            .and_then(|size| codec.decompress(&packed, size))
            .and_then(|bytes| memfd::sealed_with(&memfd_name(id), &bytes));
        let thawed = match thawed {
            Ok(fd) => lock(&shared.pools).holding(id).and_then(|p| p.thaw(id, fd)),
            Err(why) => Err(StoreError::Memory(format!(
                "decompressing {}: {why}",
                id.hex()
            ))),
        };
        if let Err(e) = thawed {
            return refuse(stream, &e);
        }
    }
    refuse(
        stream,
        &StoreError::Memory("the object was compressed again while read".into()),
    )
}

/// A put from a descriptor: a memfd the store can seal is taken as it is (the bytes are not
/// copied); anything else (a file, a pipe, a memfd still mapped writable) is read into a new
/// memfd. Either way the id is the hash of what is sealed.
fn put_fd(
    client: ClientId,
    shared: &Shared,
    name: &str,
    fd: OwnedFd,
) -> Result<Vec<u8>, StoreError> {
    let capacity = lock(&shared.pools).pool(name)?.spec.capacity;
    let too_large = |size: u64| {
        lock(&shared.pools)
            .pool(name)
            .map_or_else(|e| e, |p| p.too_large(size))
    };
    let sealed = match size_of(&fd) {
        Some(size) if size > capacity => return Err(too_large(size)),
        Some(_) if memfd::seal(fd.as_fd()).is_ok() => fd,
        _ => copy_in(fd, capacity).map_err(|e| match e {
            Copied::TooLarge(size) => too_large(size),
            Copied::Failed(e) => e,
        })?,
    };
    let size = size_of(&sealed).unwrap_or(0);
    if size > capacity {
        return Err(too_large(size));
    }
    let id = hash_fd(&sealed, size)?;
    let mut pools = lock(&shared.pools);
    let who = pools.holder(client);
    let existed = pools.pool(name)?.put_sealed(&who, id, sealed, size)?;
    drop(pools);
    let mut reply = id.0.to_vec();
    reply.extend_from_slice(&size.to_le_bytes());
    reply.push(u8::from(existed));
    Ok(reply)
}

enum Copied {
    TooLarge(u64),
    Failed(StoreError),
}

/// Read what `fd` holds (up to `limit` bytes) into a new sealed memfd; the kernel copies
/// (`copy_file_range` or `sendfile` where it can).
fn copy_in(fd: OwnedFd, limit: u64) -> Result<OwnedFd, Copied> {
    let failed =
        |what: &str, e: std::io::Error| Copied::Failed(StoreError::Invalid(format!("{what}: {e}")));
    let mut target =
        memfd::create("sutazai-pool-put").map_err(|e| Copied::Failed(StoreError::Memory(e)))?;
    let source = std::fs::File::from(fd);
    let copied = std::io::copy(&mut source.take(limit + 1), &mut target)
        .map_err(|e| failed("reading the descriptor", e))?;
    if copied > limit {
        return Err(Copied::TooLarge(copied));
    }
    memfd::seal(target.as_fd()).map_err(|e| Copied::Failed(StoreError::Memory(e)))?;
    Ok(OwnedFd::from(target))
}

/// The size of a regular file or memfd; `None` for a pipe or socket.
fn size_of(fd: &OwnedFd) -> Option<u64> {
    let stat = nix::sys::stat::fstat(fd.as_fd()).ok()?;
    let regular = (stat.st_mode & libc::S_IFMT) == libc::S_IFREG;
    regular.then_some(u64::try_from(stat.st_size).ok()?)
}

/// `u64` then a pool's name.
fn sized(body: &[u8]) -> Option<(u64, &str)> {
    let (number, rest) = body.split_at_checked(8)?;
    let number = u64::from_le_bytes(<[u8; 8]>::try_from(number).ok()?);
    match wire::split_pool(rest)? {
        (name, []) => Some((number, name)),
        _ => None,
    }
}

fn create_pool(shared: &Shared, body: &[u8]) -> Result<bool, StoreError> {
    let bad = || StoreError::Invalid("create_pool: a u64 size, a u8 codec and a name".into());
    let (size, rest) = body.split_at_checked(8).ok_or_else(bad)?;
    let capacity = u64::from_le_bytes(<[u8; 8]>::try_from(size).map_err(|_| bad())?);
    let (&codec, name) = rest.split_first().ok_or_else(bad)?;
    let compression = match codec {
        0 => Compression::Lz4,
        1 => Compression::Zlib,
        2 => Compression::None,
        _ => {
            return Err(StoreError::Invalid(format!(
                "codec {codec}: 0 lz4, 1 zlib, 2 none"
            )));
        }
    };
    let name = std::str::from_utf8(name).map_err(|_| bad())?;
    if capacity == 0 {
        return Err(StoreError::Invalid("a pool of 0 bytes".into()));
    }
    lock(&shared.pools).create(PoolSpec {
        name: name.to_string(),
        capacity,
        compression,
        agent_quota: 0,
    })
}

/// One `key=value` line per pool.
fn stats_lines(snapshot: &PoolsSnapshot) -> String {
    snapshot
        .pools
        .iter()
        .map(|p| {
            format!(
                "pool={} compression={} capacity={} used={} objects={} segments={} \
                 physical_bytes={} logical_bytes={} packed_objects={} packed_bytes={} \
                 evictions={} evicted_bytes={} refused={}\n",
                p.name,
                p.compression,
                p.capacity_bytes,
                p.used_bytes,
                p.objects,
                p.segments,
                p.physical_bytes,
                p.logical_bytes,
                p.packed_objects,
                p.packed_bytes,
                p.evictions,
                p.evicted_bytes,
                p.refused
            )
        })
        .collect()
}

/// A client no agent is known for, named by its process: "pid 42 (python3)".
fn by_process(client: ClientId, pid: Option<i32>) -> String {
    let Some(pid) = pid else {
        return format!("client {client}");
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("pid {pid} ({})", comm.trim())
}

/// Each second: name the clients that connected before their agent was known, and compress
/// unreferenced objects idle for `after` (outside the lock; one got meanwhile stays whole).
fn each_second(shared: &Shared, after: Duration, agent_of: &AgentOf) {
    let tick = after.min(Duration::from_secs(1));
    while !shared.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        let unnamed = lock(&shared.pools).unnamed();
        for (client, pid) in unnamed {
            if let Some(agent) = agent_of(pid) {
                lock(&shared.pools).name(client, &agent);
            }
        }
        let cold = lock(&shared.pools).cold(after);
        for (pool, id, fd, size, codec) in cold {
            let Ok(len) = usize::try_from(size) else {
                continue;
            };
            let packed = match ReadMap::new(fd.as_fd(), len) {
                Ok(map) => codec.compress(map.as_slice()),
                Err(e) => {
                    tracing::warn!(%e, "pools: mapping a cold object");
                    None
                }
            };
            if let Some(packed) = packed
                && let Ok(pool) = lock(&shared.pools).pool(&pool)
            {
                pool.packed(&id, packed);
            }
        }
    }
}

fn put_reply(
    stream: &mut UnixStream,
    id: &ObjectId,
    size: u64,
    existed: bool,
) -> std::io::Result<()> {
    let mut reply = id.0.to_vec();
    reply.extend_from_slice(&size.to_le_bytes());
    reply.push(u8::from(existed));
    wire::write_frame(stream, STATUS_OK, &reply)
}

fn refuse(stream: &mut UnixStream, error: &StoreError) -> std::io::Result<()> {
    wire::write_frame(stream, STATUS_ERROR, error.to_string().as_bytes())
}
