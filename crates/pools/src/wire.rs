//! Frames on the pools' Unix socket, little-endian. A pool is named by `u8 n` and `n`
//! bytes (n = 0: the default pool).
//!
//! - request: `u32 length` of what follows, `u8 op`, then the op's body:
//!   - `PUT`: the pool, then the bytes;
//!   - `PUT_FD`: the pool, with a descriptor attached (`SCM_RIGHTS`) to read the bytes
//!     from: a memfd the store can seal is taken as it is (no copy), any other is read;
//!   - `GET`, `RELEASE`: a 32-byte id;
//!   - `ALLOCATE`: `u64 size`, the pool; `SEAL`: `u64 segment`, the pool;
//!   - `CREATE_POOL`: `u64 size`, `u8 codec` (0 lz4, 1 zlib, 2 none), the name;
//!   - `STATS`: nothing.
//! - reply: `u32 length`, `u8 status` (0 ok, 1 error), then:
//!   - `PUT`, `PUT_FD`, `SEAL`: the id, `u64 size`, `u8 1` when the content was there already;
//!   - `GET`: `u64 size`, with the object's descriptor attached (read-only by its seals);
//!   - `ALLOCATE`: `u64 segment`, with the segment's descriptor attached (writable);
//!   - `CREATE_POOL`: `u8 1` when it was created, 0 when it existed as asked;
//!   - `STATS`: one line of `key=value` per pool;
//!   - an error: its message in UTF-8.
//!
//! A frame longer than the server's limit, or an unknown op, is an error, and the
//! connection is closed: after garbage, nothing later on the stream can be trusted.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

pub const OP_PUT: u8 = 1;
pub const OP_GET: u8 = 2;
pub const OP_RELEASE: u8 = 3;
pub const OP_STATS: u8 = 4;
pub const OP_PUT_FD: u8 = 5;
pub const OP_ALLOCATE: u8 = 6;
pub const OP_SEAL: u8 = 7;
pub const OP_CREATE_POOL: u8 = 8;

/// A put's reply: id, size, deduplicated.
pub const PUT_REPLY: usize = 41;

pub const STATUS_OK: u8 = 0;
pub const STATUS_ERROR: u8 = 1;

/// Write one frame: `u32 length`, `head` byte, `body`. A small frame goes in one write, so
/// the reader wakes once for it.
pub fn write_frame(stream: &mut UnixStream, head: u8, body: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(body.len() + 1)
        .map_err(|_| std::io::Error::other("frame longer than 4 GiB"))?;
    let mut header = [0u8; 5];
    header[..4].copy_from_slice(&length.to_le_bytes());
    header[4] = head;
    if body.len() <= SMALL_FRAME {
        let mut frame = Vec::with_capacity(5 + body.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(body);
        return stream.write_all(&frame);
    }
    stream.write_all(&header)?;
    stream.write_all(body)
}

/// Frames up to this size are copied into one buffer and written at once.
const SMALL_FRAME: usize = 64 * 1024;

/// Read one frame of at most `limit` bytes: its head byte and body. `Ok(None)` at a clean
/// end of stream before a frame.
pub fn read_frame(stream: &mut UnixStream, limit: usize) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_le_bytes(length) as usize;
    if length == 0 || length > limit.saturating_add(1) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes (at most {} here)", limit + 1),
        ));
    }
    let mut frame = vec![0u8; length];
    stream.read_exact(&mut frame)?;
    let body = frame.split_off(1);
    Ok(Some((frame[0], body)))
}

/// Read a request's length and op, with the descriptor attached to it if any (`recvmsg`);
/// `Ok(None)` at a clean end of stream. The body is left on the stream.
pub fn read_head_with_fd(
    stream: &mut UnixStream,
) -> std::io::Result<Option<(u8, usize, Option<OwnedFd>)>> {
    let mut head = [0u8; 5];
    let (got, fd) = recv_with_fd(stream, &mut head)?;
    if got == 0 {
        return Ok(None);
    }
    stream.read_exact(&mut head[got..])?;
    let length = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if length == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "an empty frame",
        ));
    }
    Ok(Some((head[4], length - 1, fd)))
}

/// One `recvmsg` into `buf`, keeping the first descriptor passed (any others are closed).
fn recv_with_fd(stream: &UnixStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fd = None;
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor in our table for us
                // (SCM_RIGHTS); nothing else owns it. Extra ones are closed on drop.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    Ok((msg.bytes, fd))
}

/// A pool's name as sent: `u8 n`, then `n` bytes.
pub fn pool_field(name: &str) -> std::io::Result<Vec<u8>> {
    let n = u8::try_from(name.len())
        .map_err(|_| std::io::Error::other("a pool name is at most 255 bytes"))?;
    let mut out = vec![n];
    out.extend_from_slice(name.as_bytes());
    Ok(out)
}

/// Split a pool's name off the front of `body`: the name and the rest.
pub fn split_pool(body: &[u8]) -> Option<(&str, &[u8])> {
    let (&n, rest) = body.split_first()?;
    let name = rest.get(..n as usize)?;
    Some((std::str::from_utf8(name).ok()?, &rest[n as usize..]))
}

/// Read and drop `length` bytes (a put too large to keep), without holding them.
pub fn skip(stream: &mut UnixStream, length: usize) -> std::io::Result<()> {
    let copied = std::io::copy(&mut stream.take(length as u64), &mut std::io::sink())?;
    if copied < length as u64 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Send a reply frame with a descriptor attached to its first byte.
pub fn write_frame_with_fd(
    stream: &UnixStream,
    head: u8,
    body: &[u8],
    fd: BorrowedFd<'_>,
) -> std::io::Result<()> {
    let length = u32::try_from(body.len() + 1)
        .map_err(|_| std::io::Error::other("frame longer than 4 GiB"))?;
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.extend_from_slice(&length.to_le_bytes());
    frame.push(head);
    frame.extend_from_slice(body);
    let fds = [fd.as_raw_fd()];
    let control = [ControlMessage::ScmRights(&fds)];
    let mut sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&frame)],
        &control,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(std::io::Error::from)?;
    // The descriptor went with the first byte; the rest (if any) as plain bytes.
    let mut rest = &frame[sent..];
    while !rest.is_empty() {
        let mut writer = stream;
        sent = writer.write(rest)?;
        rest = &rest[sent..];
    }
    Ok(())
}

/// Read a reply frame that may carry a descriptor; returns the head, body and descriptor.
pub fn read_frame_with_fd(
    stream: &mut UnixStream,
    limit: usize,
) -> std::io::Result<(u8, Vec<u8>, Option<OwnedFd>)> {
    let mut first = [0u8; 64];
    let (got, fd) = recv_with_fd(stream, &mut first)?;
    if got == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if got < 5 {
        let mut more = vec![0u8; 5 - got];
        stream.read_exact(&mut more)?;
        first[got..5].copy_from_slice(&more);
    }
    let have = got.max(5);
    let length = u32::from_le_bytes([first[0], first[1], first[2], first[3]]) as usize;
    if length == 0 || length > limit.saturating_add(1) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a reply of {length} bytes"),
        ));
    }
    let mut frame = first[4..have.min(4 + length)].to_vec();
    if frame.len() < length {
        let mut rest = vec![0u8; length - frame.len()];
        stream.read_exact(&mut rest)?;
        frame.extend_from_slice(&rest);
    }
    let body = frame.split_off(1);
    Ok((frame[0], body, fd))
}
