//! Gives this crate's tests and examples an rpath to the venv's libtorch (STARLING_LIBTORCH_LIB,
//! set by .cargo/config.toml), so they run without LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-env-changed=STARLING_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("STARLING_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
