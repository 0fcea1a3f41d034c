//! Writing a pulled file's data so that sparse files stay sparse: the
//! segments of a sparse entry at their offsets, and holes for whole blocks
//! of zeros in the data of large regular entries.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Files at least this large are written with holes where they hold whole
/// blocks of zeros.
const HOLE_SCAN_MIN: u64 = 32 << 10;
const BLOCK: usize = 4096;
/// Size of the buffer data passes through (a multiple of `BLOCK`).
pub(crate) const DATA_BUF: usize = 1 << 20;

/// Writes the data of a sparse entry: its segments at their offsets, holes
/// between them, the file cut to its size; the data passes through `buf`.
pub(crate) fn write_segments(
    file: &File,
    data: &mut dyn Read,
    segments: &[(u64, u64)],
    size: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    for &(offset, length) in segments {
        let mut done = 0;
        while done < length {
            let want = buf.len().min((length - done) as usize);
            data.read_exact(&mut buf[..want])?;
            file.write_all_at(&buf[..want], offset + done)?;
            done += want as u64;
        }
    }
    file.set_len(size)
}

/// Writes `data` to `file`, leaving holes for whole blocks of zeros in
/// large files; the data passes through `buf` (of [`DATA_BUF`] bytes).
pub(crate) fn write_data(file: &File, data: &mut dyn Read, buf: &mut [u8]) -> io::Result<()> {
    let mut offset = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match data.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        if offset == 0 && (n as u64) < HOLE_SCAN_MIN {
            file.write_all_at(&buf[..n], 0)?;
        } else {
            let mut run: Option<usize> = None;
            for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
                let zero = block.len() == BLOCK && block.iter().all(|&b| b == 0);
                match (zero, run) {
                    (false, None) => run = Some(i * BLOCK),
                    (true, Some(start)) => {
                        file.write_all_at(&buf[start..i * BLOCK], offset + start as u64)?;
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(start) = run {
                file.write_all_at(&buf[start..n], offset + start as u64)?;
            }
        }
        offset += n as u64;
    }
    file.set_len(offset)
}
