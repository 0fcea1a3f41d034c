use super::*;

fn layer_of(root: &Path) -> Blob {
    let file = tempfile_in(root.parent().unwrap());
    let mut w = LayerWriter::new(file, Compression::Gzip).unwrap();
    crate::registry::walk::write_tree(&mut w, root).unwrap();
    w.finish().unwrap()
}

fn tempfile_in(dir: &Path) -> File {
    File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(uuid::Uuid::new_v4().to_string()))
        .unwrap()
}

#[test]
fn registry_layers_are_deterministic() {
    let dir = std::env::temp_dir().join(format!("osstore-layer-{}", std::process::id()));
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("d/f"), b"data").unwrap();
    std::fs::write(root.join("a"), vec![b'x'; 300]).unwrap();
    let croot = CString::new(root.as_os_str().as_bytes()).unwrap();
    crate::tree::sys::set_xattr(XattrTarget::Path(&croot), c"user.k", b"v").unwrap();
    let (one, two) = (layer_of(&root), layer_of(&root));
    assert_eq!((&one.digest, &one.diff_id), (&two.digest, &two.diff_id));
    use std::io::{Read, Seek};
    let mut f = one.file;
    f.rewind().unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut tar)
        .unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let names: Vec<(Vec<u8>, EntryType)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path_bytes().into_owned(), e.header().entry_type())
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (b"./".to_vec(), EntryType::Directory),
            (b"a".to_vec(), EntryType::Regular),
            (b"d/".to_vec(), EntryType::Directory),
            (b"d/f".to_vec(), EntryType::Regular)
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn registry_pax_times() {
    assert_eq!(pax_time(5, 1), "5.000000001");
    assert_eq!(pax_time(-2, 500_000_000), "-1.500000000");
}
