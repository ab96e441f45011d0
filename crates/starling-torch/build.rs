//! Compiles starling's C++ layer against the headers of the libtorch that tch links (LIBTORCH,
//! set by .cargo/config.toml to the torch wheel in .venv).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/starling_torch.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=STARLING_LIBTORCH_LIB");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!("LIBTORCH is not set: run scripts/setup.sh (it links .venv/libtorch to the torch wheel)");
    };
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch);
    let include = libtorch.join("include");
    if !include.join("ATen/ops/_fused_adamw.h").exists() {
        panic!(
            "{}: no ATen headers with _fused_adamw_ in this libtorch (torch >= 2.4 needed)",
            include.display()
        );
    }
    cc::Build::new()
        .cpp(true)
        .file("csrc/starling_torch.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // libtorch is built with NDEBUG, and some of its classes (RecordFunction) have
        // debug-only members: without it our objects would disagree with its layout.
        .define("NDEBUG", None)
        .flag("-std=c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .compile("starling_torch");
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if let Ok(dir) = std::env::var("STARLING_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
