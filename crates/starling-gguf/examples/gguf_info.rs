//! Prints a GGUF file's metadata and tensors (like gguf-py's `gguf-dump`):
//! `cargo run -p starling-gguf --example gguf_info -- model.gguf`.

use starling_gguf::{GgufFile, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: gguf_info FILE")?);
    let f = GgufFile::read(&path)?;
    println!("{}: GGUF v3, data at byte {}", path.display(), f.data_start);
    for (k, v) in &f.header.metadata {
        let shown = match v {
            Value::StrArray(a) => format!("[{} strings] {:?} ...", a.len(), &a[..a.len().min(4)]),
            Value::I32Array(a) => format!("[{} ints] {:?} ...", a.len(), &a[..a.len().min(8)]),
            Value::Str(s) if s.len() > 80 => {
                format!("{:?}...", s.chars().take(80).collect::<String>())
            }
            other => format!("{other:?}"),
        };
        println!("  {k} = {shown}");
    }
    let bytes: u64 = f.header.tensors.iter().map(|t| t.bytes()).sum();
    println!(
        "{} tensors, {:.1} MiB:",
        f.header.tensors.len(),
        bytes as f64 / (1 << 20) as f64
    );
    for t in &f.header.tensors {
        println!("  {:32} {:?} {:?}", t.name, t.ty, t.dims);
    }
    Ok(())
}
