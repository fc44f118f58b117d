//! File input and output that a user's mistake cannot turn into data loss or a memory
//! blow-up: bounded reads, atomic writes, and the same-file test behind "this output is one
//! of your inputs".
//!
//! Invariants: [`write_atomic`] never leaves a partly written file at the destination — the
//! old contents stay until the new ones are complete and synced, then a `rename` swaps them
//! in (a failure midway, a full disk or a `kill -9` leaves the old file, and at worst a
//! hidden `.NAME.lpuc-tmp.*` beside it); [`read_limited`] never allocates more than its limit
//! plus one byte, whatever the path names (`/dev/zero`, a FIFO, a huge file).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Whether `a` and `b` name the same existing file (same device and inode, so hard links
/// and symlinks count). A path that does not exist is nobody's twin.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Why [`read_limited`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {err}")]
    Io { path: String, err: io::Error },
    #[error("{path} is a directory, not a file")]
    Directory { path: String },
    #[error("{path} is a device, not a file")]
    Device { path: String },
    #[error("{path} is larger than {limit} bytes, the most lpuc reads into memory for this kind of file")]
    TooLarge { path: String, limit: u64 },
}

/// Reads a whole file, refusing directories and anything longer than `limit` bytes
/// (checked by reading at most `limit + 1` bytes, so devices and pipes are bounded too).
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let p = || path.display().to_string();
    let io_err = |err| ReadError::Io { path: p(), err };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return Err(ReadError::Directory { path: p() });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() || t.is_block_device() {
            return Err(ReadError::Device { path: p() });
        }
    }
    if meta.is_file() && meta.len() > limit {
        return Err(ReadError::TooLarge { path: p(), limit });
    }
    let f = File::open(path).map_err(io_err)?;
    let cap = if meta.is_file() { meta.len() } else { 0 };
    let mut buf = Vec::with_capacity(usize::try_from(cap.min(limit)).unwrap_or(0));
    f.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge { path: p(), limit });
    }
    Ok(buf)
}

/// Removes the temporary file unless it was renamed into place.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}.{t}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `path` atomically: `fill` writes the contents into a temporary file in the same
/// directory, which is synced and renamed over `path` only if `fill` succeeded. An existing
/// destination keeps its permissions; a symlink is followed (its target is replaced).
/// A destination that exists and is not a regular file (`/dev/null`, a FIFO, a terminal) is
/// written in place: there is nothing to replace atomically and renaming over a device
/// would be wrong.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    // Following symlinks: `/dev/stdout` is a link to a pipe or terminal.
    let existing = std::fs::metadata(path).ok();
    if let Some(m) = &existing {
        if m.is_dir() {
            return Err(io::Error::other("is a directory"));
        }
        if !m.is_file() {
            let mut f = OpenOptions::new().write(true).open(path)?;
            fill(&mut f)?;
            return f.flush();
        }
    }
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() && existing.is_some() => std::fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::other("the path names no file"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.lpuc-tmp.{}", unique_suffix()));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The umask applies as for any new file; an existing file's mode is copied below.
        opts.mode(0o666);
    }
    let mut f = opts.open(&tmp)?;
    let mut guard = TmpGuard(Some(tmp.clone()));
    {
        let mut w = io::BufWriter::new(&mut f);
        fill(&mut w)?;
        w.flush()?;
    }
    if let Some(m) = &existing {
        f.set_permissions(m.permissions())?;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &target)?;
    guard.0 = None;
    // Make the rename itself durable.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails after `left` bytes, like a disk that fills up.
    struct FailAfter<'a> {
        inner: &'a mut dyn Write,
        left: usize,
    }

    impl Write for FailAfter<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("no space left (simulated)"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            self.inner.write(&buf[..n])
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    fn tmpdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("lpuc-fsio-{}", unique_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_write_that_fails_midway_keeps_the_old_file() {
        let d = tmpdir();
        let p = d.join("out.ir");
        std::fs::write(&p, b"old contents").unwrap();
        let big = vec![b'x'; 1 << 20];
        let r = write_atomic(&p, |w| {
            let mut f = FailAfter {
                inner: w,
                left: 1000,
            };
            f.write_all(&big)
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old contents");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        write_atomic(&p, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_destination_replaces_its_target() {
        let d = tmpdir();
        let real = d.join("real.ir");
        std::fs::write(&real, b"old").unwrap();
        let link = d.join("link.ir");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // Not a regular file: written in place, never renamed over.
        write_atomic(Path::new("/dev/null"), |w| w.write_all(b"x")).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn same_file_sees_hard_links_and_symlinks() {
        let d = tmpdir();
        let a = d.join("a");
        std::fs::write(&a, b"1").unwrap();
        std::fs::hard_link(&a, d.join("b")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&a, d.join("c")).unwrap();
        assert!(same_file(&a, &d.join("b")));
        #[cfg(unix)]
        assert!(same_file(&a, &d.join("c")));
        assert!(!same_file(&a, &d.join("missing")));
        std::fs::write(d.join("e"), b"1").unwrap();
        assert!(!same_file(&a, &d.join("e")));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reads_are_bounded() {
        let d = tmpdir();
        assert!(matches!(
            read_limited(&d, 10),
            Err(ReadError::Directory { .. })
        ));
        let p = d.join("f");
        std::fs::write(&p, b"0123456789a").unwrap();
        assert!(matches!(
            read_limited(&p, 10),
            Err(ReadError::TooLarge { .. })
        ));
        assert_eq!(read_limited(&p, 11).unwrap().len(), 11);
        #[cfg(target_os = "linux")]
        assert!(matches!(
            read_limited(Path::new("/dev/zero"), 1 << 16),
            Err(ReadError::Device { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
