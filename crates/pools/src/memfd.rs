//! Sealed memfds and read-only maps of them: the objects' memory.

use std::fs::File;
use std::io::Write;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// The seals that make an object immutable: no writes, no shrinking, no growing.
pub fn immutable() -> SealFlag {
    SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW
}

/// An empty memfd that may be sealed later.
pub fn create(name: &str) -> Result<File, String> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| format!("memfd_create: {e}"))?;
    Ok(File::from(fd))
}

/// A memfd holding `bytes`, sealed against change and against new seals.
pub fn sealed_with(name: &str, bytes: &[u8]) -> Result<OwnedFd, String> {
    let mut file = create(name)?;
    file.write_all(bytes)
        .map_err(|e| format!("writing the object: {e}"))?;
    seal(file.as_fd())?;
    Ok(OwnedFd::from(file))
}

/// Make the memfd behind `fd` immutable (and its seals final). Fails with EBUSY while
/// someone holds a writable shared map of it, EPERM when it does not allow sealing.
pub fn seal(fd: BorrowedFd<'_>) -> Result<(), String> {
    let have = fcntl(fd, FcntlArg::F_GET_SEALS).map_err(|e| format!("not a memfd ({e})"))?;
    let have = SealFlag::from_bits_truncate(have);
    if have.contains(immutable()) {
        return Ok(()); // sealed by its maker already: as good
    }
    fcntl(
        fd,
        FcntlArg::F_ADD_SEALS(immutable() | SealFlag::F_SEAL_SEAL),
    )
    .map_err(|e| match e {
        nix::errno::Errno::EBUSY => {
            "it is still mapped writable: unmap it before sealing".to_string()
        }
        nix::errno::Errno::EPERM => "it does not allow sealing".to_string(),
        e => format!("sealing: {e}"),
    })?;
    Ok(())
}

/// Whether `fd` is a memfd sealed immutable.
pub fn is_sealed(fd: BorrowedFd<'_>) -> bool {
    fcntl(fd, FcntlArg::F_GET_SEALS)
        .is_ok_and(|s| SealFlag::from_bits_truncate(s).contains(immutable()))
}

/// A read-only shared map of a descriptor's first `len` bytes; unmapped when dropped.
pub struct ReadMap {
    ptr: Option<NonNull<libc::c_void>>,
    len: usize,
}

// SAFETY: the map is read-only and owned by this value; reading it from any thread is safe.
unsafe impl Send for ReadMap {}
// SAFETY: as above, shared reads only.
unsafe impl Sync for ReadMap {}

impl ReadMap {
    /// Map `len` bytes of `fd`. The caller keeps `fd` from shrinking under the map (a sealed
    /// object cannot; a reader of a changing file would see it change, not fault).
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> Result<ReadMap, nix::Error> {
        let ptr = match NonZeroUsize::new(len) {
            None => None, // an empty object maps nothing
            Some(length) => Some(
                // SAFETY: a fresh read-only shared mapping of `len` bytes; nothing aliases it
                // mutably, and the kernel keeps it valid until munmap in `drop`.
                unsafe {
                    mmap(
                        None,
                        length,
                        ProtFlags::PROT_READ,
                        MapFlags::MAP_SHARED,
                        fd,
                        0,
                    )
                }?,
            ),
        };
        Ok(ReadMap { ptr, len })
    }

    pub fn as_slice(&self) -> &[u8] {
        match self.ptr {
            // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
            Some(ptr) => unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), self.len) },
            None => &[],
        }
    }

    pub fn address(&self) -> usize {
        self.ptr.map_or(0, |p| p.as_ptr() as usize)
    }
}

impl Drop for ReadMap {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr {
            // SAFETY: `ptr`/`len` is the mapping made in `new`, unmapped once, here.
            if let Err(e) = unsafe { munmap(ptr, self.len) } {
                tracing::warn!(%e, "unmapping a pool object");
            }
        }
    }
}
