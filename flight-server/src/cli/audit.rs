//! `agora audit verify`: checks the audit log's hash chain and reports its head.

use std::process::ExitCode;

use anyhow::{Context, Result};

/// `agora audit verify`: the chain's report, exit 1 when it is broken.
pub fn verify(config: &std::path::Path) -> Result<ExitCode> {
    let mesh = agora_engine::MeshConfig::from_file(config)?;
    let Some(governance) = &mesh.governance else {
        anyhow::bail!("{} has no governance section, so there is no audit log to verify", config.display());
    };
    let report = agora_engine::audit::verify(&governance.audit)
        .with_context(|| format!("cannot read the audit log {}", governance.audit.path.display()))?;
    for problem in &report.problems {
        println!("BROKEN {problem}");
    }
    let range = match (report.first_seq, report.last_seq) {
        (Some(first), Some(last)) => format!("seq {first}..{last}"),
        _ => "no chained records".to_string(),
    };
    let unchained =
        if report.unchained > 0 { format!(", {} unchained (older format)", report.unchained) } else { String::new() };
    println!(
        "{} records in {} files, {range}{unchained}; head {}",
        report.records,
        report.files.len(),
        report.head.as_deref().unwrap_or("-")
    );
    if report.is_intact() {
        println!("audit chain intact");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("audit chain BROKEN: {} problem(s)", report.problems.len());
        Ok(ExitCode::from(1))
    }
}
