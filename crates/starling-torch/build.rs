//! Compiles starling's C++ layer against the headers of the libtorch that tch links (LIBTORCH,
//! set by .cargo/config.toml to the torch wheel in .venv).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=STARLING_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=STARLING_NO_CUDA");
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
    // The CUDA part (memory statistics, device names) needs a CUDA libtorch and the CUDA runtime
    // headers of the wheels beside it (nvidia-cuda-runtime, nvidia-cuda-cccl, triton), as
    // starling-dist's NCCL backend does; STARLING_NO_CUDA=1 leaves it out.
    let site = libtorch.parent().map(Path::to_path_buf);
    let cuda = site.as_ref().and_then(|site| {
        let nv = site.join("nvidia");
        let dirs = [
            nv.join("cu13/include"),
            nv.join("cu13/include/cccl"),
            site.join("triton/backends/nvidia/include"),
        ];
        let ok = std::env::var_os("STARLING_NO_CUDA").is_none()
            && libtorch.join("lib/libtorch_cuda.so").exists()
            && dirs[0].join("cuda_runtime_api.h").exists()
            && dirs[1].join("nv/target").exists()
            && dirs[2].join("crt/host_config.h").exists();
        ok.then_some(dirs)
    });
    let mut b = cc::Build::new();
    if let Some(dirs) = &cuda {
        for d in dirs {
            b.include(d);
        }
        b.define("STARLING_CUDA", None);
    }
    b.cpp(true)
        .file("csrc/starling_torch.cpp")
        .file("csrc/autograd.cpp")
        .file("csrc/reducer.cpp")
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
    // Dependents' build scripts (starling-dist) read the shared header's folder as
    // DEP_STARLING_TORCH_INCLUDE.
    let csrc = Path::new(env!("CARGO_MANIFEST_DIR")).join("csrc");
    println!("cargo:include={}", csrc.display());
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    if cuda.is_some() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if let Ok(dir) = std::env::var("STARLING_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
