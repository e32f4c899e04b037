//! Compiles `proto/verdict/v1/*.proto` with protox (a protobuf compiler in Rust, so no
//! `protoc` is needed on the build machine) and generates tonic code into OUT_DIR, plus the
//! file descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it compiles: cargo may reuse a compiled
    // build script for a checkout at another path (one target folder shared by worktrees or
    // by CI's clean clones), and the baked-in path would then name a folder that is gone.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["types.proto", "jobs.proto", "workers.proto", "verdicts.proto"]
        .map(|f| root.join("verdict/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("verdict_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
