fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/bini.proto");
    tonic_prost_build::configure().compile_protos(&["../../proto/bini.proto"], &["../../proto"])?;
    Ok(())
}
