//! The one way a static file is opened: beneath the root, through no symlink that
//! leads out of it, and only if it is a regular file or a directory.

use super::cache::Identity;
use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
use rustix::io::Errno;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tower_http::services::fs::Backend;

/// File access for ServeDir that never leaves the root. ServeDir rejects `..` in the
/// request path but follows symlinks, and it also opens paths the request did not name
/// (index.html, .br/.gz siblings), so the check sits here, on every open and stat, and
/// is the kernel's: `openat2` with RESOLVE_BENEATH from the root directory (Linux 5.6),
/// so there is no window between a check and the open.
///
/// The file system calls run inline on the worker thread, as nginx makes them (without
/// its thread pools): for files in the page cache a stat, open or read takes a few
/// microseconds, far less than a hop to tokio's blocking pool and back, which the
/// default backend pays for each of them (five or more per request). A file on a slow
/// disk stalls the worker for its read.
///
/// A backend lives for one request (see [`super::StaticFiles::dir`]).
#[derive(Clone)]
pub(super) struct ConfinedBackend {
    pub(super) root: Arc<Path>,
    /// The root, open, for `openat2`.
    pub(super) root_dir: Arc<OwnedFd>,
    pub(super) files: Arc<Mutex<RequestFiles>>,
}

/// What one request's backend has opened.
#[derive(Default)]
pub(super) struct RequestFiles {
    /// The last file stat'ed, still open: ServeDir stats a path and then opens the
    /// same one.
    stash: Option<Stashed>,
    /// The file whose contents the answer carries (relative to the root), for the cache.
    pub(super) served: Option<(PathBuf, Identity)>,
}

struct Stashed {
    path: PathBuf,
    file: std::fs::File,
    metadata: std::fs::Metadata,
}

impl ConfinedBackend {
    /// Opens `path` (under the root) for reading, or just as a handle for `stat`, with
    /// its metadata. The kernel resolves it with RESOLVE_BENEATH: symlinks that stay
    /// under the root work, any that lead out (and `..` past the root) fail, in one
    /// system call. Only regular files and directories are served: the open does not
    /// block (a FIFO without a writer would hold the worker thread forever, in the open
    /// or in the first read), and anything else it finds (FIFO, socket, device) is
    /// reported as absent before a byte is read.
    fn open_beneath(
        &self,
        path: &Path,
        flags: OFlags,
    ) -> io::Result<(std::fs::File, std::fs::Metadata)> {
        let relative = self.relative(path)?;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let file: std::fs::File = match openat2(
            &*self.root_dir,
            relative,
            flags | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
            resolve,
        ) {
            Ok(fd) => fd.into(),
            Err(Errno::XDEV) => return Err(outside(path)),
            Err(e) => return Err(e.into()),
        };
        let metadata = file.metadata()?;
        if !metadata.is_file() && !metadata.is_dir() {
            tracing::warn!(path = %path.display(), "refusing to serve what is not a regular file");
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a regular file",
            ));
        }
        Ok((file, metadata))
    }

    /// `path` relative to the root: ServeDir joins the request path onto the root it was
    /// given, so that is what follows the root's bytes and a separator.
    fn relative<'a>(&self, path: &'a Path) -> io::Result<&'a Path> {
        let relative = path
            .as_os_str()
            .as_encoded_bytes()
            .strip_prefix(self.root.as_os_str().as_encoded_bytes())
            .ok_or_else(|| outside(path))?;
        match relative {
            [] | [b'/'] => Ok(Path::new(".")),
            [b'/', rest @ ..] => Ok(Path::new(std::ffi::OsStr::from_bytes(rest))),
            _ => Err(outside(path)),
        }
    }
}

/// A path that resolves outside the root: logged, and reported to ServeDir as NotFound,
/// which makes it answer 404 and move on to the next precompressed variant, exactly as
/// if the file were absent.
fn outside(path: &Path) -> io::Error {
    tracing::warn!(path = %path.display(), "refusing a path that leads outside the static files root");
    io::Error::new(io::ErrorKind::NotFound, "outside the static files root")
}

impl Backend for ConfinedBackend {
    type File = LocalFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = std::future::Ready<io::Result<LocalFile>>;
    type MetadataFuture = std::future::Ready<io::Result<std::fs::Metadata>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        let mut files = self.files.lock().unwrap();
        let opened = match files.stash.take() {
            Some(stashed) if stashed.path == path => Ok((stashed.file, stashed.metadata)),
            _ => self.open_beneath(&path, OFlags::RDONLY),
        };
        if let (Ok((_, metadata)), Ok(relative)) = (&opened, self.relative(&path)) {
            files.served = Some((relative.to_owned(), Identity::of(metadata)));
        }
        std::future::ready(opened.map(|(file, metadata)| LocalFile {
            file,
            len: metadata.len(),
            left: metadata.len(),
            metadata,
            seeked: None,
        }))
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        let mut files = self.files.lock().unwrap();
        if let Some(stashed) = files.stash.as_ref().filter(|s| s.path == path) {
            return std::future::ready(Ok(stashed.metadata.clone()));
        }
        // Opened for reading, so that `open` can take it.
        let metadata = match self.open_beneath(&path, OFlags::RDONLY) {
            Ok((file, metadata)) => {
                files.stash = Some(Stashed {
                    path,
                    file,
                    metadata: metadata.clone(),
                });
                Ok(metadata)
            }
            // May be stat'ed but not read (a directory with only search permission):
            // answer from a handle `open` cannot use.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => self
                .open_beneath(&path, OFlags::PATH)
                .map(|(_, metadata)| metadata),
            Err(e) => Err(e),
        };
        std::future::ready(metadata)
    }
}

/// An open file read with plain blocking calls (see [`ConfinedBackend`]).
pub(super) struct LocalFile {
    file: std::fs::File,
    /// Size when opened: what ServeDir announced as Content-Length.
    len: u64,
    /// Taken when opened; ServeDir asks for it again, and a second `fstat` would only
    /// tell the same.
    metadata: std::fs::Metadata,
    /// Bytes from the position to `len`. Reads stop there, and are sized by it: the
    /// buffer ServeDir passes is 64 KiB, and zeroing all of it for a 1 KiB file (as an
    /// uninitialised buffer must be before `Read::read`) costs more than the read.
    left: u64,
    /// Outcome of a `start_seek` not yet reported by `poll_complete`.
    seeked: Option<io::Result<u64>>,
}

impl tokio::io::AsyncRead for LocalFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::io::Read;
        let want = buf
            .remaining()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return std::task::Poll::Ready(Ok(()));
        }
        let n = self.file.read(buf.initialize_unfilled_to(want));
        if let Ok(n) = n {
            self.left -= n as u64;
        }
        std::task::Poll::Ready(n.map(|n| buf.advance(n)))
    }
}

impl tokio::io::AsyncSeek for LocalFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        use std::io::Seek;
        let seeked = self.file.seek(position);
        if let Ok(at) = seeked {
            self.left = self.len.saturating_sub(at);
        }
        self.seeked = Some(seeked);
        Ok(())
    }

    fn poll_complete(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<u64>> {
        use std::io::Seek;
        let result = match self.seeked.take() {
            Some(result) => result,
            None => self.file.stream_position(),
        };
        std::task::Poll::Ready(result)
    }
}

impl tower_http::services::fs::File for LocalFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> = std::future::Ready<io::Result<std::fs::Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        std::future::ready(Ok(self.metadata.clone()))
    }
}
