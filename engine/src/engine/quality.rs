//! Running the contracts' quality rules at the sources, with unrestricted
//! reads confined to the rule's own domain (see `Session::own_domain_only`).

use std::sync::Arc;

use super::{Engine, Session};
use crate::EngineError;
use crate::contract::quality::{QualityOutcome, QualityResult, kind_name, measured, newest_time, rule_sql};
use crate::contract::{QualityRule, RuleKind};

impl Engine {
    /// Runs every contract's quality rules at the sources and appends the results
    /// to the quality history (`system.quality_results`). Rules run with
    /// unrestricted reads, audited as the user `agora-quality`, and return one
    /// number each. A rule that cannot run is reported as an error and does not
    /// stop the others.
    pub async fn check_quality(&self) -> Result<Vec<QualityResult>, EngineError> {
        let session = self.internal_session("agora-quality");
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        let run_id = hex::encode(id);
        let mut results = Vec::new();
        for product in self.inner.catalog.products() {
            let Some(contract) = &product.config.contract else { continue };
            for rule in &contract.rules {
                results.push(self.check_rule(&session, product, rule, &run_id).await);
            }
        }
        let log = Arc::clone(self.inner.catalog.quality());
        let written = results.clone();
        tokio::task::spawn_blocking(move || log.append(&written))
            .await
            .map_err(|e| EngineError::Execution(format!("the quality results were not written: {e}")))?
            .map_err(|e| {
                EngineError::Execution(format!(
                    "cannot write the quality results to {}: {e}",
                    self.inner.catalog.quality().path().display()
                ))
            })?;
        Ok(results)
    }

    async fn check_rule(
        &self,
        session: &Session,
        product: &crate::catalog::Product,
        rule: &QualityRule,
        run_id: &str,
    ) -> QualityResult {
        let started = std::time::Instant::now();
        let sql = rule_sql(&product.reference, rule);
        let mut result = QualityResult {
            run_id: run_id.to_string(),
            checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            product: product.reference.to_string(),
            rule: rule.name.clone(),
            kind: kind_name(&rule.kind).to_string(),
            column: rule.column.clone(),
            dimension: rule.dimension.clone(),
            severity: rule.severity.clone(),
            expected: rule.threshold.to_string(),
            observed: None,
            outcome: QualityOutcome::Error,
            message: None,
            sql: sql.clone(),
            duration_ms: 0,
        };
        let measured: Result<Option<f64>, String> = match (&rule.kind, &sql) {
            (RuleKind::NotExecutable(why), _) => {
                result.outcome = QualityOutcome::Skipped;
                result.message = Some(format!("not run: {why}"));
                return result;
            }
            (RuleKind::Freshness { .. }, Some(sql)) => match session.collect(sql).await {
                Ok(batches) => newest_time(&batches).map(|t| t.map(|t| (chrono::Utc::now().timestamp() - t) as f64)),
                Err(e) => Err(e.to_string()),
            },
            (RuleKind::Freshness { .. }, None) => {
                match product
                    .config
                    .source
                    .modified(self.inner.catalog.opener() as &dyn datafusion::catalog::Session)
                    .await
                {
                    Ok(Some(t)) => Ok(Some((chrono::Utc::now() - t).num_seconds() as f64)),
                    Ok(None) => Err(format!(
                        "a {} source has no modification time; name the column holding the data's time in the SLA's element",
                        product.config.source.kind()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            (RuleKind::Sql(_), Some(sql)) => match session.own_domain_only(sql, &product.reference) {
                Err(e) => Err(e),
                Ok(()) => match session.collect(sql).await {
                    Ok(batches) => measured(&batches),
                    Err(e) => Err(e.to_string()),
                },
            },
            (_, Some(sql)) => match session.collect(sql).await {
                Ok(batches) => measured(&batches),
                Err(e) => Err(e.to_string()),
            },
            (_, None) => Err("the rule needs a column".to_string()),
        };
        result.duration_ms = started.elapsed().as_millis() as u64;
        match measured {
            Ok(Some(value)) => {
                result.observed = Some(value);
                let pass = rule.threshold.holds(value);
                result.outcome = if pass { QualityOutcome::Pass } else { QualityOutcome::Fail };
                if !pass {
                    result.message = Some(format!("measured {value}, expected {}", rule.threshold));
                }
            }
            Ok(None) => {
                result.outcome = if matches!(rule.kind, RuleKind::Freshness { .. }) {
                    QualityOutcome::Fail
                } else {
                    QualityOutcome::Error
                };
                result.message = Some("the measure is NULL (no rows?)".into());
            }
            Err(e) => result.message = Some(e),
        }
        result
    }
}
