//! Times one batched decode step of a model directory (the serving engine's inner loop) at
//! several batch sizes: `cargo run --release -p starling-model --example decode_step -- DIR`.

use starling_model::{load_weights, Llama, LlamaConfig};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: decode_step DIR")?);
    let weights = ["model.safetensors", "latest/model.safetensors"]
        .iter()
        .map(|w| dir.join(w))
        .find(|p| p.exists())
        .ok_or("no model.safetensors in DIR or DIR/latest")?;
    let config_dir = weights.parent().ok_or("weights path")?;
    let config = LlamaConfig::load(&config_dir.join("config.json"))?;
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = Llama::new(&vs.root(), &config);
    load_weights(&mut vs, &weights)?;
    let _g = tch::no_grad_guard();
    println!("threads {}", tch::get_num_threads());
    println!("| batch | ms/step | tokens/s | logits to host ms |");
    println!("|---|---|---|---|");
    for n in [1usize, 4, 16, 64] {
        let mut cache = model.slot_cache(64);
        let prompt: Vec<i64> = (0..16).map(|i| 10 + i).collect();
        for slot in 0..n {
            let _ = model.prefill(&prompt, slot, &mut cache);
        }
        let steps = 64;
        let (mut total, mut host) = (0f64, 0f64);
        for s in 0..steps {
            let tokens = vec![42i64; n];
            let positions = vec![16 + s as i64; n];
            let t0 = Instant::now();
            let logits = model.decode(&tokens, &positions, &mut cache);
            let t1 = Instant::now();
            let v = Vec::<f32>::try_from(&logits.reshape([-1]))?;
            std::hint::black_box(v);
            host += t1.elapsed().as_secs_f64();
            total += t0.elapsed().as_secs_f64();
        }
        let ms = total / steps as f64 * 1e3;
        println!(
            "| {n} | {ms:.2} | {:.0} | {:.3} |",
            n as f64 / (ms / 1e3),
            host / steps as f64 * 1e3
        );
    }
    Ok(())
}
