//! The binary finds the venv's libtorch through an rpath (STARLING_LIBTORCH_LIB, set by
//! .cargo/config.toml). On a CUDA host, LD_LIBRARY_PATH=<torch>/lib points it at that host's own.
//! libtorch_cuda is linked with --no-as-needed, or the linker drops it and CUDA reads unavailable.

fn main() {
    println!("cargo:rerun-if-env-changed=STARLING_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("STARLING_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-L{dir},-ltorch_cuda,--as-needed");
        }
    }
}
