//! Compiles the c10d shim against the headers of the libtorch that tch links (LIBTORCH, set by
//! .cargo/config.toml to the torch wheel in .venv). Gloo's headers come from Debian's
//! libgloo-dev (its code is inside libtorch_cpu). The NCCL backend is compiled in when that
//! libtorch has CUDA and the wheels beside it carry nccl.h and the CUDA runtime, CCCL and crt
//! headers (nvidia-nccl, nvidia-cuda-runtime, nvidia-cuda-cccl, triton); STARLING_NO_NCCL=1 leaves it out.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    let shared = PathBuf::from(
        std::env::var_os("DEP_STARLING_TORCH_INCLUDE").expect("starling-torch's include folder"),
    );
    println!(
        "cargo:rerun-if-changed={}",
        shared.join("guard.h").display()
    );
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=STARLING_NO_NCCL");
    println!("cargo:rerun-if-env-changed=STARLING_LIBTORCH_LIB");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!("LIBTORCH is not set: run scripts/setup.sh (it links .venv/libtorch to the torch wheel)");
    };
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch);
    let include = libtorch.join("include");
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
        .exists()
    {
        panic!("{}: no c10d headers in this libtorch", include.display());
    }
    if !Path::new("/usr/include/gloo/config.h").exists() {
        panic!(
            "gloo headers missing (/usr/include/gloo): install Debian's libgloo-dev (scripts/setup.sh does)"
        );
    }
    let mut b = cc::Build::new();
    b.cpp(true)
        .file("csrc/c10d_shim.cpp")
        // starling-torch's guard.h (exceptions to error texts), through its `links` metadata.
        .include(&shared)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("USE_C10D_GLOO", None)
        .define("USE_DISTRIBUTED", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // libtorch is built with NDEBUG, and some of its classes (RecordFunction) have
        // debug-only members: without it our objects would disagree with its layout.
        .define("NDEBUG", None)
        .flag("-std=c++17")
        .flag_if_supported("-Wno-interference-size")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false);
    let site = libtorch.parent().map(Path::to_path_buf);
    let nccl = site.as_ref().and_then(|site| {
        let nv = site.join("nvidia");
        // The runtime wheel lacks crt/host_config.h; triton (a torch dependency) carries it.
        let dirs = [
            nv.join("cu13/include"),
            nv.join("cu13/include/cccl"),
            nv.join("nccl/include"),
            site.join("triton/backends/nvidia/include"),
        ];
        let ok = std::env::var_os("STARLING_NO_NCCL").is_none()
            && libtorch.join("lib/libtorch_cuda.so").exists()
            && dirs[0].join("cuda_runtime_api.h").exists()
            && dirs[1].join("nv/target").exists()
            && dirs[2].join("nccl.h").exists()
            && dirs[3].join("crt/host_config.h").exists();
        ok.then_some(dirs)
    });
    if let Some(dirs) = &nccl {
        for d in dirs {
            b.include(d);
        }
        b.define("USE_C10D_NCCL", None)
            .define("STARLING_NCCL", None);
    } else {
        println!("cargo:warning=starling-dist: NCCL backend not built (needs a CUDA libtorch and the wheels nvidia-nccl, nvidia-cuda-runtime, nvidia-cuda-cccl, triton)");
    }
    b.compile("starling_c10d");
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    if nccl.is_some() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if let Ok(dir) = std::env::var("STARLING_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
