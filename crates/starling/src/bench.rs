pub fn corpus(_a: &CorpusBenchArgs) -> anyhow::Result<()> { Ok(()) }
#[derive(clap::Args)] pub struct CorpusBenchArgs {}
