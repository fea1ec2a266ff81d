//! The one rule for every path the engine owns (state dir, runtime dir, cache dir, token, pid
//! file, socket dir, log file), applied in one place so every face and command applies the
//! same:
//!
//! - owned by the effective user (root, when root runs it);
//! - not group- or world-writable;
//! - never a symlink: directories and files are opened with `O_NOFOLLOW`, files relative to
//!   the directory that was checked (`openat`), and judged by `fstat` after opening, so a swap
//!   between check and use changes nothing;
//! - the directories above belong to root or us, and none is world-writable unless sticky;
//! - anything else is refused with an error naming the path and why, never silently used.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// Directories the engine creates: ours alone.
pub const DIR_MODE: u32 = 0o700;
const WORLD_WRITABLE: u32 = 0o002;
const GROUP_WRITABLE: u32 = 0o020;
const STICKY: u32 = 0o1000;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Refused by the rule: a symlink, writable by others, a foreign owner, not a file.
    #[error("{}: refused: {why}", path.display())]
    Unsafe { path: PathBuf, why: String },
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl PathError {
    pub fn path(&self) -> &Path {
        match self {
            PathError::Unsafe { path, .. } | PathError::Io { path, .. } => path,
        }
    }

    /// A file to create new was there already (`Access::CreateNew`).
    pub fn already_exists(&self) -> bool {
        matches!(self, PathError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
    }
}

fn refused(path: &Path, why: impl std::fmt::Display) -> PathError {
    PathError::Unsafe {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn io_error(path: &Path, op: &'static str, source: io::Error) -> PathError {
    PathError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// A directory the engine owns, checked and held open: files in it are opened relative to
/// it, so the directory checked is the one used.
#[derive(Debug)]
pub struct OwnedDir {
    file: File,
    path: PathBuf,
}

/// How [`OwnedDir::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read an existing file.
    Read,
    /// Read and write, created with the mode if missing.
    ReadWrite { create_mode: u32 },
    /// Append, created with the mode if missing.
    Append { create_mode: u32 },
    /// Read, and append, created with the mode if missing (a journal).
    ReadAppend { create_mode: u32 },
    /// Write a file that must not exist yet, created with the mode (a report).
    CreateNew { create_mode: u32 },
}

impl OwnedDir {
    /// Create the directory (0700) if missing, then check it and the path to it.
    pub fn ensure(path: &Path) -> Result<OwnedDir, PathError> {
        // Checked before creating anything, so nothing is made inside a path others control.
        check_ancestors(path)?;
        let created = create_dir_if_missing(path)?;
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(refused(path, "is a symlink")),
            Ok(meta) if !meta.is_dir() => return Err(refused(path, "is not a directory")),
            Ok(_) => {}
            Err(source) => return Err(io_error(path, "inspect", source)),
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ELOOP) => refused(path, "is a symlink"),
                Some(libc::ENOTDIR) => refused(path, "is not a directory"),
                _ => io_error(path, "open", source),
            })?;
        if created {
            // The umask may have narrowed the mode; make it exactly 0700.
            file.set_permissions(Permissions::from_mode(DIR_MODE))
                .map_err(|source| io_error(path, "set the mode of", source))?;
        }
        let meta = file
            .metadata()
            .map_err(|source| io_error(path, "inspect", source))?;
        check_owner_and_mode(path, &meta)?;
        Ok(OwnedDir {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The directory holding `file` (the current directory for a bare name), ensured.
    pub fn of(file: &Path) -> Result<OwnedDir, PathError> {
        OwnedDir::ensure(parent_or_cwd(file))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// Open `name` in this directory, never through a symlink. A file created here gets
    /// exactly `create_mode` and its entry is synced; any file is then refused unless it is a
    /// regular file of ours that nobody else may write. Returns whether it was created.
    pub fn open(&self, name: &str, access: Access) -> Result<(File, bool), PathError> {
        let path = self.path.join(name);
        let base = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let (flags, create_mode) = match access {
            Access::Read => (base | OFlag::O_RDONLY, None),
            Access::ReadWrite { create_mode } => (base | OFlag::O_RDWR, Some(create_mode)),
            Access::Append { create_mode } => {
                (base | OFlag::O_WRONLY | OFlag::O_APPEND, Some(create_mode))
            }
            Access::ReadAppend { create_mode } => {
                (base | OFlag::O_RDWR | OFlag::O_APPEND, Some(create_mode))
            }
            Access::CreateNew { create_mode } => (base | OFlag::O_WRONLY, Some(create_mode)),
        };
        let exclusive = matches!(access, Access::CreateNew { .. });
        let mode = nix::sys::stat::Mode::from_bits_truncate(create_mode.unwrap_or(0o600));
        let openat = |flags: OFlag| -> io::Result<File> {
            Ok(File::from(nix::fcntl::openat(
                &self.file, name, flags, mode,
            )?))
        };
        let (opened, created) = match create_mode {
            None => (openat(flags), false),
            Some(_) => match openat(flags | OFlag::O_CREAT | OFlag::O_EXCL) {
                Ok(file) => (Ok(file), true),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && !exclusive => {
                    (openat(flags), false)
                }
                Err(e) => (Err(e), true),
            },
        };
        let file = opened.map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => refused(&path, "is a symlink"),
            _ => io_error(&path, "open", source),
        })?;
        if let (true, Some(mode)) = (created, create_mode) {
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(|source| io_error(&path, "set the mode of", source))?;
            // The new entry must survive a crash as surely as what is written into it.
            self.file
                .sync_all()
                .map_err(|source| io_error(&path, "sync the directory of", source))?;
        }
        let meta = file
            .metadata()
            .map_err(|source| io_error(&path, "inspect", source))?;
        if !meta.is_file() {
            return Err(refused(&path, "is not a regular file"));
        }
        check_owner_and_mode(&path, &meta)?;
        // Blocking again: the flag was only there so a FIFO in its place could not hang us.
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_SETFL(flags & OFlag::O_APPEND),
        )
        .map_err(|e| io_error(&path, "set the flags of", e.into()))?;
        Ok((file, created))
    }
}

/// Open the file at `path` by the rule: its directory ensured and checked, the file opened in
/// it (see [`OwnedDir::open`]). Returns whether it was created.
pub fn open_owned(path: &Path, access: Access) -> Result<(File, bool), PathError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| refused(path, "names no file"))?;
    OwnedDir::of(path)?.open(name, access)
}

/// Returns whether the dir was created. A new dir's entry is synced into its parent, so
/// what is written inside cannot vanish with it in a crash.
fn create_dir_if_missing(dir: &Path) -> Result<bool, PathError> {
    match fs::symlink_metadata(dir) {
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error(dir, "inspect", source)),
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| io_error(dir, "create", source))?;
    let parent = parent_or_cwd(dir);
    File::open(parent)
        .and_then(|p| p.sync_all())
        .map_err(|source| io_error(parent, "sync", source))?;
    Ok(true)
}

fn nearest_existing_parent(dir: &Path) -> &Path {
    let mut candidate = parent_or_cwd(dir);
    while fs::symlink_metadata(candidate).is_err() {
        match candidate.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => candidate = parent,
            _ => return Path::new("."),
        }
    }
    candidate
}

fn parent_or_cwd(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Every directory above must be owned by root or us, and not writable by all unless sticky
/// (as /tmp): otherwise someone could swap ours for their own. Checks from the nearest
/// existing parent up; the levels still to create will be ours, mode 0700.
fn check_ancestors(dir: &Path) -> Result<(), PathError> {
    let parent = nearest_existing_parent(dir);
    let canonical =
        fs::canonicalize(parent).map_err(|source| io_error(parent, "resolve", source))?;
    let euid = nix::unistd::geteuid().as_raw();
    for ancestor in canonical.ancestors() {
        let meta =
            fs::metadata(ancestor).map_err(|source| io_error(ancestor, "inspect", source))?;
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(refused(
                dir,
                format_args!("{} is owned by uid {}", ancestor.display(), meta.uid()),
            ));
        }
        if meta.mode() & WORLD_WRITABLE != 0 && meta.mode() & STICKY == 0 {
            return Err(refused(
                dir,
                format_args!("{} is world-writable and not sticky", ancestor.display()),
            ));
        }
    }
    Ok(())
}

/// Ours alone: owned by the effective uid, writable by nobody else.
pub fn check_owner_and_mode(path: &Path, meta: &fs::Metadata) -> Result<(), PathError> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(refused(
            path,
            format_args!("owned by uid {}, not by us (uid {euid})", meta.uid()),
        ));
    }
    let mode = meta.mode();
    if mode & WORLD_WRITABLE != 0 {
        return Err(refused(
            path,
            format_args!("world-writable (mode {:o})", mode & 0o7777),
        ));
    }
    if mode & GROUP_WRITABLE != 0 {
        return Err(refused(
            path,
            format_args!("group-writable (mode {:o})", mode & 0o7777),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).expect("chmod");
        dir
    }

    fn refusal(result: Result<impl std::fmt::Debug, PathError>) -> String {
        match result {
            Err(PathError::Unsafe { why, .. }) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_new_dir_is_0700_and_its_files_get_their_mode() {
        let root = dir();
        let owned = OwnedDir::ensure(&root.path().join("a/b")).expect("created");
        let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o7777;
        assert_eq!(mode(owned.path()), 0o700);
        let (_, created) = owned
            .open("f", Access::ReadWrite { create_mode: 0o600 })
            .expect("open");
        assert!(created);
        assert_eq!(mode(&owned.path().join("f")), 0o600);
        let (_, again) = owned
            .open("f", Access::Append { create_mode: 0o600 })
            .expect("reopen");
        assert!(!again);
    }

    #[test]
    fn symlinks_and_writable_by_others_are_refused() {
        let root = dir();
        let real = root.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(refusal(OwnedDir::ensure(&link)).contains("symlink"));

        fs::set_permissions(&real, Permissions::from_mode(0o777)).expect("chmod");
        assert!(refusal(OwnedDir::ensure(&real)).contains("world-writable"));
        fs::set_permissions(&real, Permissions::from_mode(0o770)).expect("chmod");
        assert!(refusal(OwnedDir::ensure(&real)).contains("group-writable"));
        fs::set_permissions(&real, Permissions::from_mode(0o700)).expect("chmod");
        let owned = OwnedDir::ensure(&real).expect("ours");

        fs::write(real.join("token"), "x").expect("write");
        fs::set_permissions(real.join("token"), Permissions::from_mode(0o666)).expect("chmod");
        assert!(refusal(owned.open("token", Access::Read)).contains("world-writable"));
        std::os::unix::fs::symlink(real.join("token"), real.join("alias")).expect("symlink");
        assert!(refusal(owned.open("alias", Access::Read)).contains("symlink"));
        fs::create_dir(real.join("sub")).expect("mkdir");
        assert!(refusal(owned.open("sub", Access::Read)).contains("not a regular file"));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let root = dir();
        let owned = OwnedDir::ensure(root.path()).expect("ours");
        nix::unistd::mkfifo(
            &root.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        assert!(refusal(owned.open("fifo", Access::Read)).contains("not a regular file"));
    }

    #[test]
    fn a_dir_under_a_world_writable_parent_is_refused() {
        let root = dir();
        let open = root.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, Permissions::from_mode(0o777)).expect("chmod");
        assert!(
            refusal(OwnedDir::ensure(&open.join("state")))
                .contains("world-writable and not sticky")
        );
        // Sticky, as /tmp: fine.
        fs::set_permissions(&open, Permissions::from_mode(0o1777)).expect("chmod");
        OwnedDir::ensure(&open.join("state")).expect("under a sticky dir");
    }

    #[test]
    fn a_foreign_owner_is_refused() {
        // Only root can give a file away; elsewhere there is nothing to check.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let root = dir();
        let owned = OwnedDir::ensure(root.path()).expect("ours");
        fs::write(root.path().join("planted"), "x").expect("write");
        std::os::unix::fs::chown(root.path().join("planted"), Some(65534), Some(65534))
            .expect("chown");
        assert!(refusal(owned.open("planted", Access::Read)).contains("owned by uid 65534"));
    }
}
