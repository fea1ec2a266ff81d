//! The store on a Unix socket: one thread per client (agents are few and long-lived), the
//! store behind one lock. A client's references are released when its connection ends,
//! however it ends.

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::store::{ClientId, ObjectId, Store, StoreError};
use crate::wire::{self, OP_GET, OP_PUT, OP_RELEASE, OP_STATS, STATUS_ERROR, STATUS_OK};

/// The most clients connected at once; past it a connection is told why and closed.
pub const MAX_CLIENTS: usize = 256;

/// What a server is started with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub socket: PathBuf,
    /// Mode of the socket file (0o600: root only).
    pub mode: u32,
    pub pool: String,
    pub capacity: u64,
    pub max_held_per_client: usize,
}

/// A running server; stops accepting when dropped (connected clients finish on their own).
pub struct Server {
    pub store: Arc<Mutex<Store>>,
    socket: PathBuf,
}

impl Server {
    /// Bind the socket (a stale one from an earlier run is replaced) and serve on a thread.
    pub fn start(config: &ServerConfig) -> std::io::Result<Server> {
        match std::fs::remove_file(&config.socket) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&config.socket)?;
        std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(config.mode))?;
        let store = Arc::new(Mutex::new(Store::new(
            &config.pool,
            config.capacity,
            config.max_held_per_client,
        )));
        let limit = usize::try_from(config.capacity).unwrap_or(usize::MAX);
        let shared = store.clone();
        std::thread::Builder::new()
            .name("pools-accept".into())
            .spawn(move || accept(listener, shared, limit))?;
        Ok(Server {
            store,
            socket: config.socket.clone(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

fn accept(listener: UnixListener, store: Arc<Mutex<Store>>, limit: usize) {
    static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);
    let connected = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%e, "pools: accept failed");
                continue;
            }
        };
        if connected.load(Ordering::Relaxed) >= MAX_CLIENTS {
            let why = format!("{MAX_CLIENTS} clients are connected, the most at once");
            let _ = wire::write_frame(&mut stream, STATUS_ERROR, why.as_bytes());
            continue;
        }
        connected.fetch_add(1, Ordering::Relaxed);
        let client = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let (store, connected) = (store.clone(), connected.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("pools-client-{client}"))
            .spawn(move || {
                serve(&mut stream, client, &store, limit);
                lock(&store).client_gone(client);
                connected.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            tracing::warn!(%e, "pools: no thread for a client");
        }
    }
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    // A panic elsewhere leaves the map consistent (every change is one statement).
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The longest body of an op other than a put (an id).
const SMALL_BODY: usize = 64;

/// Answer one client's requests until it goes, or sends what cannot be trusted.
fn serve(stream: &mut UnixStream, client: ClientId, store: &Mutex<Store>, limit: usize) {
    loop {
        let (op, length) = match wire::read_head(stream) {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                let _ = wire::write_frame(stream, STATUS_ERROR, e.to_string().as_bytes());
                return;
            }
        };
        let known = matches!(op, OP_PUT | OP_GET | OP_RELEASE | OP_STATS);
        if !known || (op != OP_PUT && length > SMALL_BODY) {
            // Garbage: after it, nothing on this stream can be trusted.
            let why = format!("unknown op {op} or a {length}-byte body for it");
            let _ = wire::write_frame(stream, STATUS_ERROR, why.as_bytes());
            return;
        }
        if op == OP_PUT && length > limit {
            // Larger than the pool: drained, refused with the reason, the client stays.
            if wire::skip(stream, length).is_err() {
                return; // it went half-way: nothing was stored
            }
            let full = lock(store).too_large(length as u64);
            if refuse(stream, &full).is_err() {
                return;
            }
            continue;
        }
        let mut body = vec![0u8; length];
        if std::io::Read::read_exact(stream, &mut body).is_err() {
            return; // a put cut short never becomes an object: nothing was stored yet
        }
        let sent = match op {
            OP_PUT => match lock(store).put(client, &body) {
                Ok((id, existed)) => {
                    let mut reply = id.0.to_vec();
                    reply.extend_from_slice(&(body.len() as u64).to_le_bytes());
                    reply.push(u8::from(existed));
                    wire::write_frame(stream, STATUS_OK, &reply)
                }
                Err(e) => refuse(stream, &e),
            },
            OP_GET => match id_of(&body) {
                Some(id) => {
                    let got = lock(store).get(client, &id);
                    match got {
                        Ok((fd, size)) => wire::write_frame_with_fd(
                            stream,
                            STATUS_OK,
                            &size.to_le_bytes(),
                            fd.as_fd(),
                        ),
                        Err(e) => refuse(stream, &e),
                    }
                }
                None => bad_id(stream),
            },
            OP_RELEASE => match id_of(&body) {
                Some(id) => match lock(store).release(client, &id) {
                    Ok(()) => wire::write_frame(stream, STATUS_OK, &[]),
                    Err(e) => refuse(stream, &e),
                },
                None => bad_id(stream),
            },
            _ => {
                let s = lock(store).stats();
                let line = format!(
                    "capacity={} objects={} physical_bytes={} logical_bytes={} evictions={} \
                     evicted_bytes={}",
                    s.capacity,
                    s.objects,
                    s.physical_bytes,
                    s.logical_bytes,
                    s.evictions,
                    s.evicted_bytes
                );
                wire::write_frame(stream, STATUS_OK, line.as_bytes())
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

fn id_of(body: &[u8]) -> Option<ObjectId> {
    <[u8; 32]>::try_from(body).ok().map(ObjectId)
}

fn refuse(stream: &mut UnixStream, error: &StoreError) -> std::io::Result<()> {
    wire::write_frame(stream, STATUS_ERROR, error.to_string().as_bytes())
}

fn bad_id(stream: &mut UnixStream) -> std::io::Result<()> {
    wire::write_frame(stream, STATUS_ERROR, b"an id is 32 bytes")
}
