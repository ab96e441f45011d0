//! `starling plan`: arguments → `starling_plan` inputs → tables or JSON.

use anyhow::{bail, Context, Result};
use starling_plan::{gpu, plan, report, ModelSpec, PlanInput, PostVolume, Precision, Tokens};

/// Options of `starling plan`.
#[derive(clap::Args)]
pub struct PlanArgs {
    /// Parameters (e.g. 7e9); or give --layers and --d-model.
    #[arg(long)]
    params: Option<f64>,
    /// Active parameters per token (mixture of experts).
    #[arg(long)]
    active_params: Option<f64>,
    /// Experts per MoE layer (with --active-experts, scales --params to active parameters).
    #[arg(long)]
    experts: Option<u32>,
    /// Experts used per token.
    #[arg(long)]
    active_experts: Option<u32>,
    /// Transformer layers.
    #[arg(long)]
    layers: Option<u32>,
    /// Hidden width.
    #[arg(long)]
    d_model: Option<u32>,
    /// Attention heads (attention width = heads x 128 when --d-model is not given).
    #[arg(long)]
    heads: Option<u32>,
    /// Vocabulary size.
    #[arg(long, default_value_t = 32_000)]
    vocab: u32,
    /// Context length.
    #[arg(long, default_value_t = 2048)]
    context: u32,
    /// Training tokens (e.g. 2e12) or `chinchilla` (20 per parameter).
    #[arg(long, default_value = "chinchilla")]
    tokens: String,
    /// GPU: v100, a100-40gb, a100-80gb, h100, h800, h200, b200.
    #[arg(long, default_value = "h100")]
    gpu: String,
    /// GPUs in the job.
    #[arg(long, default_value_t = 1024)]
    gpus: u64,
    /// Model-FLOPs utilisation (default: the GPU generation's anchored default).
    #[arg(long)]
    mfu: Option<f64>,
    /// Use fp8 matrix products.
    #[arg(long)]
    fp8: bool,
    /// Failures per GPU-hour (default: Llama 3's 419 in 54 days on 16,384 GPUs).
    #[arg(long)]
    failure_rate: Option<f64>,
    /// Aggregate checkpoint write bandwidth, GB/s (default 0.25 per GPU, at most 2,000).
    #[arg(long)]
    ckpt_gbps: Option<f64>,
    /// Data-centre PUE.
    #[arg(long, default_value_t = 1.2)]
    pue: f64,
    /// Tokens per optimizer step (global batch), for the all-reduce time per step.
    #[arg(long, default_value_t = 4_194_304.0)]
    batch_tokens: f64,
    /// Electricity, $ per kWh.
    #[arg(long, default_value_t = 0.10)]
    kwh_price: f64,
    /// Rental price override, $ per GPU-hour.
    #[arg(long)]
    rent: Option<f64>,
    /// Purchase price override, $ per GPU.
    #[arg(long)]
    price: Option<f64>,
    /// Posts per day on the platform (with --tokens-per-post and --years, checks the data supply).
    #[arg(long)]
    posts_per_day: Option<f64>,
    /// Tokens per post.
    #[arg(long, default_value_t = 30.0)]
    tokens_per_post: f64,
    /// Years of posts.
    #[arg(long, default_value_t = 1.0)]
    years: f64,
    /// Share of posts removed by curation.
    #[arg(long, default_value_t = 0.5)]
    dedup_ratio: f64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Predict published runs and compare.
    #[arg(long)]
    validate: bool,
    /// A named scenario: twitter-2023 (10,000 A100s bought at $10k each).
    #[arg(long)]
    preset: Option<String>,
}

/// Runs `starling plan`.
pub fn run(a: &PlanArgs) -> Result<()> {
    if a.validate {
        let rows = starling_plan::validate::validate();
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!("{}", report::validation_table(&rows));
        }
        return Ok(());
    }
    if let Some(p) = &a.preset {
        match p.as_str() {
            "twitter-2023" => print!("{}", report::twitter_2023()?),
            other => bail!("unknown preset `{other}`; known: twitter-2023"),
        }
        return Ok(());
    }
    let input = input(a)?;
    let p = plan(&input).context("planning")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", report::plan_table(&p));
    }
    Ok(())
}

fn input(a: &PlanArgs) -> Result<PlanInput> {
    let g = *gpu::find(&a.gpu).ok_or_else(|| starling_plan::Error::UnknownGpu(a.gpu.clone()))?;
    let mut model = match (a.params, a.layers, a.d_model.or(a.heads.map(|h| h * 128))) {
        (_, Some(l), Some(d)) => {
            let mut m = ModelSpec::from_arch(l, d, a.vocab, a.context);
            if let Some(p) = a.params {
                m.params = p;
                m.active_params = p;
            }
            m
        }
        (Some(p), _, _) => ModelSpec::dense(p, a.context),
        _ => bail!("give the model as --params, or as --layers with --d-model (or --heads)"),
    };
    match (a.experts, a.active_experts, a.active_params) {
        (_, _, Some(act)) => model = model.with_active(act),
        (Some(e), Some(k), None) => {
            if e == 0 || k == 0 || k > e {
                bail!("--active-experts ({k}) must be between 1 and --experts ({e})");
            }
            // Roughly two thirds of a dense layer's parameters are its MLP, which MoE replicates.
            let dense_share = 1.0 / 3.0;
            let act =
                model.params * (dense_share + (1.0 - dense_share) * f64::from(k) / f64::from(e));
            model = model.with_active(act);
        }
        (Some(_), None, None) | (None, Some(_), None) => {
            bail!("--experts and --active-experts go together")
        }
        (None, None, None) => {}
    }
    let tokens = if a.tokens.eq_ignore_ascii_case("chinchilla") {
        Tokens::Chinchilla
    } else {
        Tokens::Count(a.tokens.parse::<f64>().with_context(|| {
            format!(
                "--tokens: `{}` is neither a number nor `chinchilla`",
                a.tokens
            )
        })?)
    };
    let mut i = PlanInput::new(model, tokens, g, a.gpus);
    i.mfu = a.mfu;
    i.precision = if a.fp8 {
        Precision::Fp8
    } else {
        Precision::Bf16
    };
    if let Some(f) = a.failure_rate {
        i.failure_rate = f;
    }
    i.checkpoint_bw = a.ckpt_gbps.map(|g| g * 1e9);
    i.pue = a.pue;
    i.batch_tokens = a.batch_tokens;
    i.kwh_price = a.kwh_price;
    i.rent_per_hour = a.rent;
    i.price = a.price;
    i.posts = a.posts_per_day.map(|ppd| PostVolume {
        posts_per_day: ppd,
        tokens_per_post: a.tokens_per_post,
        years: a.years,
        dedup_ratio: a.dedup_ratio,
    });
    Ok(i)
}
