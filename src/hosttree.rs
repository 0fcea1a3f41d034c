//! The host tree: a read-only view of the host with only `/usr` in it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::mount;
use crate::tempdir::TempDir;

/// A directory in `tmp/` that is a read-only bind mount of itself, with the
/// host's `/usr` bind-mounted read-only at `usr/`. Unmounted and removed on
/// drop.
#[derive(Debug)]
pub struct HostTree {
    dir: TempDir,
}

impl HostTree {
    /// Builds the view inside `dir`, a fresh directory the host tree owns.
    pub fn create(dir: TempDir) -> Result<HostTree> {
        let root = dir.path().to_path_buf();
        let usr = root.join("usr");
        std::fs::create_dir(&usr).map_err(|e| Error::path("cannot create", &usr, e))?;
        // The directory itself first, so that `/` of the view is read-only too;
        // `usr` was created before, so the second mount has its mount point.
        mount::bind_readonly(&root, &root)?;
        let tree = HostTree { dir };
        // On failure `tree` is dropped, which unmounts the root again.
        mount::bind_readonly(Path::new("/usr"), &usr)?;
        Ok(tree)
    }

    /// The root of the view.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for HostTree {
    fn drop(&mut self) {
        // `usr` is mounted on top of the root's own bind mount; a lazy
        // unmount of each (innermost first) leaves the plain directory,
        // which the TempDir then removes.
        let root = self.dir.path();
        let _ = mount::unmount(&root.join("usr"));
        let _ = mount::unmount(root);
    }
}
