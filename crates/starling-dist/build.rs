//! Compiles the c10d shim against the headers of the libtorch that tch links (LIBTORCH, set by
//! .cargo/config.toml to the torch wheel in .venv), as starling-torch-build says. Gloo's headers
//! come from Debian's libgloo-dev (its code is inside libtorch_cpu). The NCCL backend is compiled
//! in when that libtorch has CUDA and the wheels beside it carry nccl.h and the CUDA headers
//! (nvidia-nccl, nvidia-cuda-runtime, nvidia-cuda-cccl, triton); STARLING_NO_NCCL=1 leaves it out.

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
    println!("cargo:rerun-if-env-changed=STARLING_NO_NCCL");
    let libtorch = starling_torch_build::libtorch();
    starling_torch_build::require_header(
        &libtorch,
        "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp",
        "no c10d headers in this libtorch",
    );
    if !Path::new("/usr/include/gloo/config.h").exists() {
        panic!(
            "gloo headers missing (/usr/include/gloo): install Debian's libgloo-dev (scripts/setup.sh does)"
        );
    }
    let mut b = starling_torch_build::cxx(&libtorch);
    b.file("csrc/c10d_shim.cpp")
        // starling-torch's guard.h (exceptions to error texts), through its `links` metadata.
        .include(&shared)
        .define("USE_C10D_GLOO", None)
        .define("USE_DISTRIBUTED", None)
        .flag_if_supported("-Wno-interference-size");
    let nccl = starling_torch_build::cuda_headers(&libtorch)
        .filter(|_| std::env::var_os("STARLING_NO_NCCL").is_none())
        .and_then(|mut dirs| {
            let nccl = libtorch.parent()?.join("nvidia/nccl/include");
            nccl.join("nccl.h").exists().then(|| {
                dirs.push(nccl);
                dirs
            })
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
    starling_torch_build::link(&libtorch, nccl.is_some());
}
