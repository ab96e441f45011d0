//! The GPU catalog: peak throughput, memory, power and prices, each with its source.

use serde::Serialize;

/// A GPU generation; the default MFU is chosen per generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Generation {
    /// V100.
    Volta,
    /// A100.
    Ampere,
    /// H100, H800, H200.
    Hopper,
    /// B200.
    Blackwell,
}

/// One GPU model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gpu {
    /// Catalog key (`a100-80gb`).
    pub key: &'static str,
    /// Marketing name.
    pub name: &'static str,
    /// Generation.
    pub generation: Generation,
    /// Peak dense bf16 (fp16 on V100) tensor FLOP/s.
    pub peak_bf16: f64,
    /// Peak dense fp8 tensor FLOP/s (`None` before Hopper).
    pub peak_fp8: Option<f64>,
    /// Memory in bytes.
    pub memory: f64,
    /// Memory bandwidth in bytes/s.
    pub bandwidth: f64,
    /// Board power in watts.
    pub power_w: f64,
    /// NVLink bandwidth per GPU inside a node, one direction, bytes/s.
    pub nvlink: f64,
    /// Network (InfiniBand/RoCE) bandwidth per GPU between nodes, one direction, bytes/s.
    pub nic: f64,
    /// Default rental price, $ per GPU-hour.
    pub rent_per_hour: f64,
    /// Default purchase price per GPU, $.
    pub price: f64,
    /// Where the figures come from.
    pub source: &'static str,
}

const GB: f64 = 1e9;
const T: f64 = 1e12;

/// The H100, of which the H800 and the H200 are variants.
const H100: Gpu = Gpu {
    key: "h100",
    name: "NVIDIA H100 SXM5 80GB",
    generation: Generation::Hopper,
    peak_bf16: 989.0 * T,
    peak_fp8: Some(1979.0 * T),
    memory: 80.0 * GB,
    bandwidth: 3350.0 * GB,
    power_w: 700.0,
    nvlink: 450.0 * GB,
    nic: 50.0 * GB,
    rent_per_hour: 2.99,
    price: 30_000.0,
    source: "NVIDIA H100 datasheet (989 TFLOPS bf16 / 1,979 fp8 dense, 3.35 TB/s, 700 W); Lambda on-demand 2024 $2.99/h; ~$30k street price 2024",
};

/// The catalog. Network: NVLink per GPU one way (V100 300 GB/s, A100 600, H100/H200 900, H800
/// 400, B200 1,800 both ways, halved) and one NIC per GPU as in NVIDIA's DGX/HGX reference nodes
/// (V100 100 Gb/s EDR, A100 200 Gb/s HDR, Hopper and B200 400 Gb/s NDR).
pub const CATALOG: &[Gpu] = &[
    Gpu {
        key: "v100",
        name: "NVIDIA V100 SXM2 32GB",
        generation: Generation::Volta,
        peak_bf16: 125.0 * T,
        peak_fp8: None,
        memory: 32.0 * GB,
        bandwidth: 900.0 * GB,
        power_w: 300.0,
        nvlink: 150.0 * GB,
        nic: 12.5 * GB,
        rent_per_hour: 3.06,
        price: 10_000.0,
        source: "NVIDIA V100 datasheet (125 TFLOPS fp16 tensor, 900 GB/s, 300 W); AWS p3.16xlarge on-demand $24.48/8 GPUs; ~$10k list at launch",
    },
    Gpu {
        key: "a100-40gb",
        name: "NVIDIA A100 SXM4 40GB",
        generation: Generation::Ampere,
        peak_bf16: 312.0 * T,
        peak_fp8: None,
        memory: 40.0 * GB,
        bandwidth: 1555.0 * GB,
        power_w: 400.0,
        nvlink: 300.0 * GB,
        nic: 25.0 * GB,
        rent_per_hour: 1.29,
        price: 10_000.0,
        source: "NVIDIA A100 datasheet (312 TFLOPS bf16 dense, 1,555 GB/s, 400 W); Lambda on-demand 2024 $1.29/h; $10k per GPU as in the seed's 10,000-GPU purchase",
    },
    Gpu {
        key: "a100-80gb",
        name: "NVIDIA A100 SXM4 80GB",
        generation: Generation::Ampere,
        peak_bf16: 312.0 * T,
        peak_fp8: None,
        memory: 80.0 * GB,
        bandwidth: 2039.0 * GB,
        power_w: 400.0,
        nvlink: 300.0 * GB,
        nic: 25.0 * GB,
        rent_per_hour: 1.79,
        price: 15_000.0,
        source: "NVIDIA A100 datasheet (312 TFLOPS bf16 dense, 2,039 GB/s, 400 W); Lambda on-demand 2024 $1.79/h; ~$15k street price 2023",
    },
    H100,
    Gpu {
        key: "h800",
        name: "NVIDIA H800 SXM5 80GB",
        nvlink: 200.0 * GB,
        rent_per_hour: 2.00,
        source: "H100 compute with cut NVLink (NVIDIA export variant); $2/GPU-hour is DeepSeek-V3 report's rental assumption",
        ..H100
    },
    Gpu {
        key: "h200",
        name: "NVIDIA H200 SXM 141GB",
        memory: 141.0 * GB,
        bandwidth: 4800.0 * GB,
        rent_per_hour: 3.50,
        price: 35_000.0,
        source: "NVIDIA H200 datasheet (989 TFLOPS bf16 / 1,979 fp8 dense, 4.8 TB/s, 700 W); cloud list prices 2024-25 ~$3.5/h; ~$35k",
        ..H100
    },
    Gpu {
        key: "b200",
        name: "NVIDIA B200 180GB",
        generation: Generation::Blackwell,
        peak_bf16: 2250.0 * T,
        peak_fp8: Some(4500.0 * T),
        memory: 180.0 * GB,
        bandwidth: 8000.0 * GB,
        power_w: 1000.0,
        nvlink: 900.0 * GB,
        nic: 50.0 * GB,
        rent_per_hour: 5.50,
        price: 40_000.0,
        source: "NVIDIA DGX B200 datasheet per GPU (2.25 PFLOPS bf16 / 4.5 fp8 dense, 8 TB/s, ~1 kW); cloud list prices 2025 ~$5.5/h; ~$40k",
    },
];

/// Looks a GPU up by key (case-insensitive; `a100` means `a100-80gb`, `h100-sxm` means `h100`).
pub fn find(key: &str) -> Option<&'static Gpu> {
    let k = key.to_ascii_lowercase();
    let k = match k.as_str() {
        "a100" => "a100-80gb",
        "h100-sxm" | "h100-80gb" => "h100",
        other => other,
    };
    CATALOG.iter().find(|g| g.key == k)
}

/// The catalog entry of a CUDA device by the name the driver reports (`NVIDIA H200`,
/// `NVIDIA A100-SXM4-40GB`, `Tesla V100-SXM2-32GB`, `NVIDIA H100 80GB HBM3`, ...).
pub fn from_device_name(name: &str) -> Option<&'static Gpu> {
    let n = name.to_ascii_uppercase();
    let key = if n.contains("B200") {
        "b200"
    } else if n.contains("H200") {
        "h200"
    } else if n.contains("H800") {
        "h800"
    } else if n.contains("H100") {
        "h100"
    } else if n.contains("A100") {
        if n.contains("40GB") {
            "a100-40gb"
        } else {
            "a100-80gb"
        }
    } else if n.contains("V100") {
        "v100"
    } else {
        return None;
    };
    find(key)
}

/// Default model-FLOPs utilisation of a generation, with the anchor it comes from (none of them a
/// run of the validation table).
pub fn default_mfu(generation: Generation) -> (f64, &'static str) {
    match generation {
        Generation::Volta => (
            0.236,
            "Megatron-LM (Shoeybi et al. 2019): 15.1 PFLOP/s on 512 V100 = 29.5 TFLOP/s per GPU = 23.6% of peak",
        ),
        Generation::Ampere => (
            0.415,
            "mean of three at-scale A100 anchors: MT-NLG 530B on 2,240 A100 30.2% (PaLM paper, Table 3); Megatron-LM \
             (Narayanan et al. 2021) 3,072 A100 52% of peak counting recomputation = 39% model FLOPs; MegaScale 55.2% on 12,288 GPUs",
        ),
        Generation::Hopper => (
            0.40,
            "llm.c GPT-2 124M, 10B tokens in 45 min on 8xH100: 6*N*D + attention over 8 GPUs x 2,700 s x 989 TFLOP/s = 40%",
        ),
        Generation::Blackwell => (0.40, "no published at-scale anchor yet: Hopper's default carried over"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_find_their_peak() {
        let peak = |n: &str| from_device_name(n).map(|g| g.peak_bf16);
        assert_eq!(peak("NVIDIA H200"), Some(989e12));
        assert_eq!(peak("NVIDIA H100 80GB HBM3"), Some(989e12));
        assert_eq!(peak("NVIDIA A100-SXM4-40GB"), Some(312e12));
        assert_eq!(
            from_device_name("NVIDIA A100-SXM4-80GB").map(|g| g.key),
            Some("a100-80gb")
        );
        assert_eq!(
            from_device_name("Tesla V100-SXM2-32GB").map(|g| g.key),
            Some("v100")
        );
        assert_eq!(from_device_name("NVIDIA GeForce RTX 4090"), None);
    }
}
