//! Compiles starling's C++ layer against the headers of the libtorch that tch links (LIBTORCH,
//! set by .cargo/config.toml to the torch wheel in .venv), as starling-torch-build says.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=STARLING_NO_CUDA");
    let libtorch = starling_torch_build::libtorch();
    starling_torch_build::require_header(
        &libtorch,
        "ATen/ops/_fused_adamw.h",
        "no ATen headers with _fused_adamw_ in this libtorch (torch >= 2.4 needed)",
    );
    // The CUDA part (memory statistics, device names) needs a CUDA libtorch and the CUDA runtime
    // headers of the wheels beside it, as starling-dist's NCCL backend does; STARLING_NO_CUDA=1
    // leaves it out.
    let cuda = starling_torch_build::cuda_headers(&libtorch)
        .filter(|_| std::env::var_os("STARLING_NO_CUDA").is_none());
    let mut b = starling_torch_build::cxx(&libtorch);
    // ATen's `parallel_for` is a header template: without OpenMP in this compile it runs every
    // block on the calling thread. libtorch is built with GNU OpenMP and ships its libgomp, which
    // the binaries' runpath (libtorch's lib folder) makes the one both use.
    b.flag("-fopenmp");
    if let Some(dirs) = &cuda {
        for d in dirs {
            b.include(d);
        }
        b.define("STARLING_CUDA", None);
    }
    b.file("csrc/starling_torch.cpp")
        .file("csrc/autograd.cpp")
        .file("csrc/reducer.cpp")
        .file("csrc/profiler.cpp")
        .file("csrc/loss.cpp")
        .file("csrc/swiglu.cpp")
        .file("csrc/rope.cpp")
        .file("csrc/graph.cpp")
        .file("csrc/attention.cpp")
        .file("csrc/rmsnorm.cpp")
        .compile("starling_torch");
    // Dependents' build scripts (starling-dist) read the shared header's folder as
    // DEP_STARLING_TORCH_INCLUDE.
    let csrc = Path::new(env!("CARGO_MANIFEST_DIR")).join("csrc");
    println!("cargo:include={}", csrc.display());
    starling_torch_build::link(&libtorch, cuda.is_some());
    println!("cargo:rustc-link-lib=dylib=gomp");
}
