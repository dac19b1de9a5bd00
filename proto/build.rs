//! Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "tassis.proto",
        "internal/keystore.proto",
        "internal/messaging.proto",
        "internal/attachments.proto",
        "internal/federation.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
