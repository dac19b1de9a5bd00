//! `tassis-load`: see the crate docs and README "Load testing".

use clap::Parser;
use tassis_load::LoadConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = LoadConfig::parse();
    let json = cfg.json.clone();
    let report = tassis_load::run(cfg).await?;
    println!("{report}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        if path == "-" {
            println!("{text}");
        } else {
            std::fs::write(&path, text)?;
        }
    }
    if report.target_rate > 0 && report.delivered == 0 {
        anyhow::bail!("nothing was delivered");
    }
    std::process::exit(0)
}
