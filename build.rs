//! Generates the C header from the C layer alone (`src/ffi` and the modules
//! it declares, so nothing of the core can leak into it) with
//! cbindgen, into `OUT_DIR` and next to the build's artifacts
//! (`target/<profile>/osstore.h`), where the Makefile compares it with the
//! committed `include/osstore.h`. The version macros come from Cargo.toml's
//! version, so they cannot drift from `os_version()`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let crate_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    config.after_includes = Some(version_macros());
    // The C layer's root; cbindgen follows its `mod` declarations.
    let builder = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi/mod.rs"));
    let bindings = match builder.generate() {
        Ok(b) => b,
        Err(e) => {
            // A syntax error in the sources is reported by rustc itself.
            println!("cargo:warning=cbindgen could not generate the header: {e}");
            return;
        }
    };
    bindings.write_to_file(out_dir.join("osstore.h"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        bindings.write_to_file(profile_dir.join("osstore.h"));
    }
}

/// The `OSSTORE_VERSION_*` macros and `OSSTORE_CHECK_VERSION()`.
fn version_macros() -> String {
    let part = |name: &str| std::env::var(name).expect("cargo sets the version parts");
    let (major, minor, patch) = (
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
    );
    format!(
        r#"
/**
 * The version of this header, at compile time (os_version() tells the
 * version of the library a program runs with).
 */
#define OSSTORE_VERSION_MAJOR {major}
#define OSSTORE_VERSION_MINOR {minor}
#define OSSTORE_VERSION_PATCH {patch}

/**
 * Non-zero when this header's version is major.minor.patch or later, e.g.
 * `#if OSSTORE_CHECK_VERSION(0, 2, 0)` around code that needs 0.2.
 */
#define OSSTORE_CHECK_VERSION(major, minor, patch)                             \
  (OSSTORE_VERSION_MAJOR > (major) ||                                        \
   (OSSTORE_VERSION_MAJOR == (major) && OSSTORE_VERSION_MINOR > (minor)) ||  \
   (OSSTORE_VERSION_MAJOR == (major) && OSSTORE_VERSION_MINOR == (minor) &&  \
    OSSTORE_VERSION_PATCH >= (patch)))"#
    )
}
