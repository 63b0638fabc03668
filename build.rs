//! Compiles the gRPC contract with `protox` (pure Rust: no system `protoc` needed) and
//! hands the descriptors to tonic's prost generator. The encoded descriptor set is also
//! written to OUT_DIR so the server can offer gRPC reflection.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/emailverify/v1/email_verification.proto";
    println!("cargo:rerun-if-changed={proto}");

    let fds = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("emailverify_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
