//! Generates the protocol's messages, clients and servers from `proto/mom/v1/*.proto`.
//!
//! `protox` parses the files in Rust, so building needs no `protoc` on the machine;
//! `tonic-prost-build` turns the resulting descriptor set into Rust code in `OUT_DIR`.

use std::error::Error;

/// The include root of the protocol files.
const PROTO_ROOT: &str = "proto";

/// The files to compile, relative to [`PROTO_ROOT`].
const PROTO_FILES: &[&str] = &["mom/v1/cluster.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let fds = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
