//! `tree-op copy SRC DST [N]` / `tree-op remove PATH`: the tree engines alone,
//! for profiling (`perf record`, `strace -c`); not run by `make bench`.
//! `copy` copies SRC into the existing DST N times (DST/0, DST/1, ...),
//! printing each time.

use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["copy", src, dst, rest @ ..] => {
            let n: usize = rest.first().map_or(1, |s| s.parse().expect("N"));
            for i in 0..n {
                let d = Path::new(dst).join(i.to_string());
                std::fs::create_dir(&d).expect("mkdir");
                let t = Instant::now();
                osstore::tree::copy_tree(Path::new(src), &d).expect("copy");
                println!("copy {:.3} s", t.elapsed().as_secs_f64());
            }
        }
        ["remove", path] => {
            let t = Instant::now();
            osstore::tree::remove_tree(Path::new(path)).expect("remove");
            println!("remove {:.3} s", t.elapsed().as_secs_f64());
        }
        _ => {
            eprintln!("usage: tree-op copy SRC DST [N] | tree-op remove PATH");
            std::process::exit(2);
        }
    }
}
