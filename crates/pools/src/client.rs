//! The Rust client: put bytes (or a descriptor), get an object as a read-only map of its
//! memfd (no copy), release it; allocate a writable segment, fill it and seal it to share
//! it. One connection holds the references it took; dropping it releases them.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::Compression;
use crate::memfd::{self, ReadMap};
use crate::object::ObjectId;
use crate::wire::{self, STATUS_OK};

/// The longest reply a client reads (replies are small: ids, sizes, stats lines).
const REPLY_LIMIT: usize = 1024 * 1024;

/// Puts at least this large go through a memfd the store adopts, not through the socket.
pub const MEMFD_PUT_FROM: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("pools socket: {0}")]
    Io(#[from] std::io::Error),
    /// The store said no, and why.
    #[error("{0}")]
    Refused(String),
    #[error("a malformed reply: {0}")]
    Malformed(&'static str),
    #[error("mapping the object: {0}")]
    Map(nix::Error),
    #[error(
        "the store restarted or stopped (its connection ended): the objects this client held \
         are gone from it; connect again and put them again (maps already made stay readable)"
    )]
    StoreRestarted,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put {
    pub id: ObjectId,
    pub size: u64,
    /// The same bytes were there already: stored once, now referenced once more.
    pub deduplicated: bool,
}

pub struct Client {
    stream: UnixStream,
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        Ok(Client {
            stream: UnixStream::connect(socket)?,
        })
    }

    /// Put `bytes` into the default pool.
    pub fn put(&mut self, bytes: &[u8]) -> Result<Put, ClientError> {
        self.put_in("", bytes)
    }

    /// Put `bytes` into `pool`: small ones on the socket, large ones written to a memfd
    /// the store then seals and keeps as it is.
    pub fn put_in(&mut self, pool: &str, bytes: &[u8]) -> Result<Put, ClientError> {
        if bytes.len() >= MEMFD_PUT_FROM {
            let mut file = memfd::create("sutazai-pool-put")
                .map_err(|e| ClientError::Io(std::io::Error::other(e)))?;
            file.write_all(bytes)?;
            return self.put_fd(pool, file.as_fd());
        }
        let mut body = wire::pool_field(pool)?;
        body.extend_from_slice(bytes);
        self.send(wire::OP_PUT, &body)?;
        put_of(&self.reply()?)
    }

    /// Put what `fd` holds into `pool`: a memfd the store can seal is taken without a copy
    /// (and can no longer be written, by anyone); a file or pipe is read.
    pub fn put_fd(&mut self, pool: &str, fd: BorrowedFd<'_>) -> Result<Put, ClientError> {
        let body = wire::pool_field(pool)?;
        self.check(wire::write_frame_with_fd(
            &self.stream,
            wire::OP_PUT_FD,
            &body,
            fd,
        ))?;
        put_of(&self.reply()?)
    }

    /// Object `id`, mapped read-only from the store's own memory.
    pub fn get(&mut self, id: &ObjectId) -> Result<Mapped, ClientError> {
        self.send(wire::OP_GET, &id.0)?;
        let (size, fd) = self.reply_with_fd()?;
        let len = usize::try_from(size).map_err(|_| ClientError::Malformed("object too large"))?;
        let map = ReadMap::new(fd.as_fd(), len).map_err(ClientError::Map)?;
        Ok(Mapped { map, _fd: fd })
    }

    pub fn release(&mut self, id: &ObjectId) -> Result<(), ClientError> {
        self.send(wire::OP_RELEASE, &id.0)?;
        self.reply().map(|_| ())
    }

    /// `allocate_memory`: a writable segment of `size` bytes in `pool`, counted against the
    /// pool and this agent until sealed or this client goes.
    pub fn allocate(&mut self, pool: &str, size: u64) -> Result<Segment, ClientError> {
        let mut body = size.to_le_bytes().to_vec();
        body.extend_from_slice(&wire::pool_field(pool)?);
        self.send(wire::OP_ALLOCATE, &body)?;
        let (number, fd) = self.reply_with_fd()?;
        Ok(Segment {
            number,
            pool: pool.to_string(),
            file: std::fs::File::from(fd),
        })
    }

    /// `share_memory`: seal a filled segment into an object (deduplicated like a put); any
    /// agent can then `get` its id read-only.
    pub fn seal(&mut self, segment: Segment) -> Result<Put, ClientError> {
        let mut body = segment.number.to_le_bytes().to_vec();
        body.extend_from_slice(&wire::pool_field(&segment.pool)?);
        drop(segment.file); // no writable descriptor of ours outlives the seal
        self.send(wire::OP_SEAL, &body)?;
        put_of(&self.reply()?)
    }

    /// `create_pool`: a pool of `size` bytes (until the store stops); true when created,
    /// false when it existed as asked.
    pub fn create_pool(
        &mut self,
        name: &str,
        size: u64,
        codec: Compression,
    ) -> Result<bool, ClientError> {
        let mut body = size.to_le_bytes().to_vec();
        body.push(match codec {
            Compression::Lz4 => 0,
            Compression::Zlib => 1,
            Compression::None => 2,
        });
        body.extend_from_slice(name.as_bytes());
        self.send(wire::OP_CREATE_POOL, &body)?;
        Ok(self.reply()?.first() == Some(&1))
    }

    /// The store's figures, one `key=value` line per pool.
    pub fn stats(&mut self) -> Result<String, ClientError> {
        self.send(wire::OP_STATS, &[])?;
        Ok(String::from_utf8_lossy(&self.reply()?).into_owned())
    }

    fn send(&mut self, op: u8, body: &[u8]) -> Result<(), ClientError> {
        let sent = wire::write_frame(&mut self.stream, op, body);
        self.check(sent)
    }

    fn check(&self, sent: std::io::Result<()>) -> Result<(), ClientError> {
        sent.map_err(gone_or_io)
    }

    fn reply(&mut self) -> Result<Vec<u8>, ClientError> {
        match wire::read_frame(&mut self.stream, REPLY_LIMIT).map_err(gone_or_io)? {
            Some((STATUS_OK, body)) => Ok(body),
            Some((_, body)) => Err(ClientError::Refused(
                String::from_utf8_lossy(&body).into_owned(),
            )),
            None => Err(ClientError::StoreRestarted),
        }
    }

    /// A reply of one `u64` with a descriptor attached.
    fn reply_with_fd(&mut self) -> Result<(u64, OwnedFd), ClientError> {
        let (status, body, fd) =
            wire::read_frame_with_fd(&mut self.stream, REPLY_LIMIT).map_err(gone_or_io)?;
        if status != STATUS_OK {
            return Err(ClientError::Refused(
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        let number = <[u8; 8]>::try_from(body.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| ClientError::Malformed("a reply of one u64"))?;
        let fd = fd.ok_or(ClientError::Malformed("the reply carries a descriptor"))?;
        Ok((number, fd))
    }
}

/// A connection that ended (the store stopped or restarted) is told as such.
fn gone_or_io(e: std::io::Error) -> ClientError {
    use std::io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted => {
            ClientError::StoreRestarted
        }
        _ => ClientError::Io(e),
    }
}

fn put_of(body: &[u8]) -> Result<Put, ClientError> {
    if body.len() != wire::PUT_REPLY {
        return Err(ClientError::Malformed("a put's reply is 41 bytes"));
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&body[..32]);
    let mut size = [0u8; 8];
    size.copy_from_slice(&body[32..40]);
    Ok(Put {
        id: ObjectId(id),
        size: u64::from_le_bytes(size),
        deduplicated: body[40] == 1,
    })
}

/// An object mapped read-only; unmapped when dropped.
pub struct Mapped {
    map: ReadMap,
    _fd: OwnedFd,
}

impl Mapped {
    pub fn as_slice(&self) -> &[u8] {
        self.map.as_slice()
    }

    /// Where the object is mapped (to show that two readers share the same pages).
    pub fn address(&self) -> usize {
        self.map.address()
    }
}

/// A writable segment from `allocate`; fill it, then `seal` it to share it.
pub struct Segment {
    pub number: u64,
    pub pool: String,
    file: std::fs::File,
}

impl Segment {
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), ClientError> {
        Ok(self.file.write_all_at(bytes, offset)?)
    }

    /// The segment's descriptor, for a writable map (unmap it before sealing).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
