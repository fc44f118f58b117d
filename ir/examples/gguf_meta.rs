//! Prints a GGUF file's metadata (arrays abbreviated) and tensor table: `cargo run -p lpuc-ir --example gguf_meta -- FILE.gguf`.
fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: gguf_meta FILE.gguf");
        std::process::exit(2);
    };
    let f = match lpuc_ir::gguf::GgufFile::open(std::path::Path::new(&path)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("GGUF v{}, {} tensors", f.version(), f.tensors().len());
    for (k, v) in f.metadata() {
        let s = format!("{v:?}");
        println!(
            "{k} = {}",
            if s.len() > 120 {
                format!(
                    "{}…",
                    &s[..s.char_indices().nth(120).map_or(s.len(), |c| c.0)]
                )
            } else {
                s
            }
        );
    }
    for t in f.tensors().iter().take(12) {
        println!("{} {} {:?} @{}", t.name, t.dtype, t.shape(), t.offset);
    }
}
