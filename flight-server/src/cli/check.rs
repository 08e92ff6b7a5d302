//! `agora check`: validates the configuration, opens every product and
//! compares it with its contract (schema drift); with --quality it also runs
//! the contracts' quality rules.

use std::process::ExitCode;

use agora_engine::Engine;
use agora_engine::contract::quality::QualityOutcome;
use anyhow::Result;

/// Runs `agora check` on the mesh `config`; exits 1 when any check failed.
pub async fn run(config: &std::path::Path, quality: bool) -> Result<ExitCode> {
    let engine = Engine::open(config).await?;
    println!("{}: configuration ok ({} domains)", config.display(), engine.domains().len());
    let mut failed = 0;
    for (domain, why) in engine.attach_failures() {
        failed += 1;
        println!("FAIL  domain {domain}: its attached PostgreSQL schema could not be listed: {why}");
    }
    for check in engine.check().await {
        let contract = engine
            .config()
            .domain(&check.product.domain)
            .and_then(|d| d.product(&check.product.product))
            .and_then(|p| p.contract.clone());
        let name = check.product.to_string();
        match check.result {
            Ok(schema) => {
                let drift = contract.as_ref().map(|c| agora_engine::contract::drift(c, &schema)).unwrap_or_default();
                if drift.is_empty() {
                    let with = if contract.is_some() { ", matches its contract" } else { "" };
                    println!("ok    {name:<32} {} columns{with}", schema.fields().len());
                } else {
                    failed += 1;
                    println!("DRIFT {name:<32} the source no longer matches its contract:");
                    for d in drift {
                        println!("        {d}");
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  {name:<32} {e}");
            }
        }
    }
    if let Some(policies) = engine.policies() {
        match engine.validate_policies().await {
            Ok(()) => println!("ok    policies {} (deny by default)", policies.version()),
            Err(e) => {
                failed += 1;
                println!("FAIL  policies: {e}");
            }
        }
    } else {
        println!("note  no governance section: every authenticated principal reads every product");
    }
    if quality {
        let results = engine.check_quality().await?;
        println!(
            "quality rules ({} checked, results appended to {}):",
            results.len(),
            engine.config().quality.display()
        );
        for r in &results {
            let column = r.column.as_deref().map(|c| format!(".{c}")).unwrap_or_default();
            let what = format!("{}{column}", r.product);
            let observed = r.observed.map(|v| format!("{v}")).unwrap_or_else(|| "-".into());
            let label = match r.outcome.as_str() {
                "pass" => "pass ",
                "fail" => "FAIL ",
                "skipped" => "skip ",
                _ => "ERROR",
            };
            println!("{label} {what:<32} {:<44} {} (measured {observed})", r.rule, r.expected);
            if !r.passed()
                && let Some(m) = &r.message
            {
                println!("        {m}");
            }
            if matches!(r.outcome, QualityOutcome::Fail | QualityOutcome::Error) {
                failed += 1;
            }
        }
    }
    if let Some(lineage) = engine.lineage() {
        lineage.flush(std::time::Duration::from_secs(10)).await;
    }
    if failed > 0 {
        println!("{failed} check{} failed", if failed == 1 { "" } else { "s" });
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
