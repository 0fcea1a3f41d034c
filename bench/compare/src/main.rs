//! `compare-trees A B`: the fidelity check of `make bench`. Runs the same
//! comparison as the tests (`osstore::tree::compare_trees`), prints every
//! difference (at most 20) and exits 0 when the trees are identical, 1 when
//! they differ, 2 on error.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let [a, b] = args.as_slice() else {
        eprintln!("usage: compare-trees A B");
        return ExitCode::from(2);
    };
    match osstore::tree::compare_trees(Path::new(a), Path::new(b)) {
        Ok(diffs) if diffs.is_empty() => ExitCode::SUCCESS,
        Ok(diffs) => {
            for d in diffs.iter().take(20) {
                eprintln!("compare-trees: {d}");
            }
            eprintln!("compare-trees: {} difference(s)", diffs.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("compare-trees: {e}");
            ExitCode::from(2)
        }
    }
}
