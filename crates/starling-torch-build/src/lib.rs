//! How starling's C++ (starling-torch's layer, starling-dist's c10d shim) compiles and links
//! against the libtorch tch links: the torch wheel's, named by `LIBTORCH` (set by
//! `.cargo/config.toml` to `.venv/libtorch`). One place knows its headers, the defines its
//! classes' layouts need, the CUDA headers of the wheels beside it and the link lines.

use std::path::{Path, PathBuf};

/// The libtorch to build against (`LIBTORCH`, canonical); panics with the fix when unset, as a
/// build script must.
pub fn libtorch() -> PathBuf {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=STARLING_LIBTORCH_LIB");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!("LIBTORCH is not set: run scripts/setup.sh (it links .venv/libtorch to the torch wheel)");
    };
    libtorch.canonicalize().unwrap_or(libtorch)
}

/// Panics with `what` unless `libtorch`'s headers hold `needed` (a header this build uses).
pub fn require_header(libtorch: &Path, needed: &str, what: &str) {
    let include = libtorch.join("include");
    if !include.join(needed).exists() {
        panic!("{}: {what}", include.display());
    }
}

/// A C++17 build against `libtorch`'s headers with the defines its classes' layouts need: the
/// C++11 ABI, and NDEBUG (libtorch is built with it; RecordFunction has debug-only members).
pub fn cxx(libtorch: &Path) -> cc::Build {
    let include = libtorch.join("include");
    let mut b = cc::Build::new();
    b.cpp(true)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("NDEBUG", None)
        .flag("-std=c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false);
    b
}

/// The CUDA headers of the wheels beside `libtorch` (nvidia-cuda-runtime, nvidia-cuda-cccl, and
/// triton's crt, which the runtime wheel lacks) when `libtorch` has CUDA and they are all there.
pub fn cuda_headers(libtorch: &Path) -> Option<Vec<PathBuf>> {
    let site = libtorch.parent()?;
    let nv = site.join("nvidia");
    let dirs = vec![
        nv.join("cu13/include"),
        nv.join("cu13/include/cccl"),
        site.join("triton/backends/nvidia/include"),
    ];
    let ok = libtorch.join("lib/libtorch_cuda.so").exists()
        && dirs[0].join("cuda_runtime_api.h").exists()
        && dirs[1].join("nv/target").exists()
        && dirs[2].join("crt/host_config.h").exists();
    ok.then_some(dirs)
}

/// Links `libtorch`'s CPU libraries (and its CUDA ones when `cuda`), with an rpath to
/// `STARLING_LIBTORCH_LIB` when set.
pub fn link(libtorch: &Path, cuda: bool) {
    println!(
        "cargo:rustc-link-search=native={}",
        libtorch.join("lib").display()
    );
    if cuda {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if let Ok(dir) = std::env::var("STARLING_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
