use super::*;
use std::path::Path;
use std::sync::Mutex as StdMutex;

/// A synthetic tree: every directory at depth < 3 has 3 subdirectories.
/// Its "open directories" are the relative paths.
struct Fake {
    log: StdMutex<Vec<String>>,
    fail_at: Option<&'static str>,
}

impl Walker for Fake {
    type Data = ();
    type Dir = PathBuf;
    type Scratch = ();
    fn scratch(&self) {}
    fn open(&self, parent: &PathBuf, node: &Node<(), PathBuf>) -> Result<PathBuf> {
        Ok(parent.join(OsStr::from_bytes(node.name.to_bytes())))
    }
    fn open_parent(&self, child: &PathBuf, _: &Node<(), PathBuf>) -> Result<PathBuf> {
        Ok(child.parent().map(Path::to_path_buf).unwrap_or_default())
    }
    fn visit(
        &self,
        _: &mut (),
        node: &Node<(), PathBuf>,
        dir: &PathBuf,
        children: &mut Vec<(CString, ())>,
    ) -> Result<()> {
        assert_eq!(*dir, node.rel());
        if self.fail_at == Some(dir.to_str().unwrap_or("")) {
            return Err(crate::error::Error::new(libc::EIO, "boom"));
        }
        if dir.components().count() < 3 {
            for i in 0..3 {
                children.push((CString::new(i.to_string()).unwrap_or_default(), ()));
            }
        }
        Ok(())
    }
    fn leave(
        &self,
        _: &mut (),
        node: &Node<(), PathBuf>,
        dir: Arc<PathBuf>,
        parent: Option<&PathBuf>,
    ) -> Result<()> {
        assert_eq!(*dir, node.rel());
        assert_eq!(parent.cloned(), node.parent().map(Node::rel));
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        // Post-order: every child must already be logged.
        for i in 0..3 {
            let child = dir.join(i.to_string());
            if dir.components().count() < 3 {
                assert!(
                    log.iter().any(|l| Path::new(l) == child),
                    "{child:?} not done"
                );
            }
        }
        log.push(dir.to_string_lossy().into_owned());
        Ok(())
    }
}

#[test]
fn tree_pool_visits_all_in_post_order() {
    let fake = Fake {
        log: StdMutex::new(Vec::new()),
        fail_at: None,
    };
    run(&fake, PathBuf::new(), (), 4).expect("walk");
    let log = fake.log.into_inner().unwrap_or_else(|p| p.into_inner());
    assert_eq!(log.len(), 1 + 3 + 9 + 27);
    assert_eq!(log.last().map(String::as_str), Some(""));
}

#[test]
fn tree_pool_returns_first_error() {
    let fake = Fake {
        log: StdMutex::new(Vec::new()),
        fail_at: Some("1/2"),
    };
    let err = run(&fake, PathBuf::new(), (), 3).expect_err("must fail");
    assert_eq!(err.errno(), libc::EIO);
    let log = fake.log.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(!log.iter().any(|l| l.is_empty()), "root must not complete");
}
