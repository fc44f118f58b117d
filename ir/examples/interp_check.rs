//! Runs token ids through the reference interpreter on a GGUF model and prints the top logits
//! of the last position: `cargo run --release -p lpuc-ir --example interp_check -- MODEL.gguf 6403,1980,253,655 [OUT.f32]`.
use lpuc_ir::import::{import_gguf, GgufWeights, ImportOptions};
use std::path::Path;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: interp_check MODEL.gguf ID,ID,... [OUT.f32]".into());
    }
    let path = Path::new(&args[1]);
    let ids: Vec<u32> = args[2]
        .split(',')
        .map(|s| s.trim().parse().map_err(|e| format!("{s}: {e}")))
        .collect::<Result<_, _>>()?;
    let w = GgufWeights::open(path).map_err(|e| e.to_string())?;
    let (g, _) = import_gguf(
        &w.file,
        path,
        &ImportOptions {
            max_ctx: Some(512),
            all_logits: false,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mut it = lpuc_ir::interp::Interpreter::new(&g, &w).map_err(|e| e.to_string())?;
    let t = std::time::Instant::now();
    let logits = it.run_tokens(&ids).map_err(|e| e.to_string())?;
    eprintln!("prefill of {} tokens: {:?}", ids.len(), t.elapsed());
    let row = logits.row(0);
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    for &i in &idx[..10] {
        println!("{i} {}", row[i]);
    }
    if let Some(out) = args.get(3) {
        let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(out, bytes).map_err(|e| e.to_string())?;
    }
    let t = std::time::Instant::now();
    it.run_tokens(&[idx[0] as u32]).map_err(|e| e.to_string())?;
    eprintln!("one decode step: {:?}", t.elapsed());
    Ok(())
}
