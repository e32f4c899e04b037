//! With the `cuda` feature, compile kernels/verdict.cu to PTX with nvcc (found as $NVCC, then
//! on PATH; scripts/build-cuda.sh sets both up). Without it there is nothing to build.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels/verdict.cu");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("verdict.ptx");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".to_string());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", &format!("-arch=sm_{cap}"), "kernels/verdict.cu", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {nvcc} (set NVCC or put nvcc on PATH; scripts/build-cuda.sh does): {e}"));
    assert!(status.success(), "{nvcc} failed on kernels/verdict.cu");
}
