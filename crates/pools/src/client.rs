//! The Rust client: put bytes, get an object as a read-only map of its memfd (no copy),
//! release it. One connection holds the references it took; dropping it releases them.

use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use crate::store::ObjectId;
use crate::wire::{self, OP_GET, OP_PUT, OP_RELEASE, OP_STATS, STATUS_OK};

/// The longest reply a client reads (replies are small: ids, sizes, a stats line).
const REPLY_LIMIT: usize = 64 * 1024;

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

    pub fn put(&mut self, bytes: &[u8]) -> Result<Put, ClientError> {
        wire::write_frame(&mut self.stream, OP_PUT, bytes)?;
        let body = self.reply()?;
        if body.len() != 41 {
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

    /// Object `id`, mapped read-only from the store's own memory.
    pub fn get(&mut self, id: &ObjectId) -> Result<Mapped, ClientError> {
        wire::write_frame(&mut self.stream, OP_GET, &id.0)?;
        let (status, body, fd) = wire::read_frame_with_fd(&mut self.stream, REPLY_LIMIT)?;
        if status != STATUS_OK {
            return Err(ClientError::Refused(
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        let size = <[u8; 8]>::try_from(body.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| ClientError::Malformed("a get's reply is a size"))?;
        let fd = fd.ok_or(ClientError::Malformed("a get's reply carries a descriptor"))?;
        Mapped::new(fd, size)
    }

    pub fn release(&mut self, id: &ObjectId) -> Result<(), ClientError> {
        wire::write_frame(&mut self.stream, OP_RELEASE, &id.0)?;
        self.reply().map(|_| ())
    }

    /// The store's figures as one `key=value` line.
    pub fn stats(&mut self) -> Result<String, ClientError> {
        wire::write_frame(&mut self.stream, OP_STATS, &[])?;
        Ok(String::from_utf8_lossy(&self.reply()?).into_owned())
    }

    fn reply(&mut self) -> Result<Vec<u8>, ClientError> {
        match wire::read_frame(&mut self.stream, REPLY_LIMIT)? {
            Some((STATUS_OK, body)) => Ok(body),
            Some((_, body)) => Err(ClientError::Refused(
                String::from_utf8_lossy(&body).into_owned(),
            )),
            None => Err(ClientError::Malformed("the store closed the connection")),
        }
    }
}

/// An object mapped read-only; unmapped when dropped.
pub struct Mapped {
    ptr: Option<NonNull<libc::c_void>>,
    len: usize,
    _fd: OwnedFd,
}

impl Mapped {
    fn new(fd: OwnedFd, size: u64) -> Result<Mapped, ClientError> {
        let len = usize::try_from(size).map_err(|_| ClientError::Malformed("object too large"))?;
        let ptr = match NonZeroUsize::new(len) {
            None => None, // an empty object maps nothing
            Some(length) => Some(
                // SAFETY: a fresh read-only shared mapping of a sealed memfd of exactly
                // `len` bytes (F_SEAL_SHRINK: it cannot shrink under us); nothing else
                // aliases it mutably.
                unsafe {
                    mmap(
                        None,
                        length,
                        ProtFlags::PROT_READ,
                        MapFlags::MAP_SHARED,
                        &fd,
                        0,
                    )
                }
                .map_err(ClientError::Map)?,
            ),
        };
        Ok(Mapped { ptr, len, _fd: fd })
    }

    pub fn as_slice(&self) -> &[u8] {
        match self.ptr {
            // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives, and the
            // seals keep them from changing.
            Some(ptr) => unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), self.len) },
            None => &[],
        }
    }

    /// Where the object is mapped (to show that two readers share the same pages).
    pub fn address(&self) -> usize {
        self.ptr.map_or(0, |p| p.as_ptr() as usize)
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr {
            // SAFETY: `ptr`/`len` is the mapping made in `new`, unmapped once, here.
            if let Err(e) = unsafe { munmap(ptr, self.len) } {
                tracing::warn!(%e, "unmapping a pool object");
            }
        }
    }
}
