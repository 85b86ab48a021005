//! Generates the `receptor.v1` gRPC contract from `proto/` with protox, so no system `protoc`
//! is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["receptor/v1/mesh.proto", "receptor/v1/work.proto"],
        ["proto"],
    )?;
    // No `connect` constructors on the clients: `Mesh.Connect` is an RPC, and clients build
    // their channel themselves (Unix sockets, TLS, the classic-socket upgrade).
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
