use chrono::Duration as CDuration;
use recon_core::{ManualClock, RunStatus, Runner};
use serde_json::json;

use super::*;
use crate::failed::{FailedRecordStore, NewFailure};
use crate::lineage::{LineageStatus, LineageUpdate};
use crate::memory::{MemoryFailedRecordStore, MemoryLineageStore};
use crate::recovery::{
    DelaySchedule, RecoveryReconciler, Replay, ReplayError, StageHandler, StageRecovery,
};

fn now() -> DateTime<Utc> {
    "2024-11-04T06:00:00Z".parse().unwrap()
}

fn stages() -> Stages {
    Stages::new(["extracted", "pii_removed", "embedding_generated", "loaded"]).unwrap()
}

struct Fixed(u64);

#[async_trait]
impl SourceCount for Fixed {
    async fn source_count(&self, _: &RunContext) -> Result<u64> {
        Ok(self.0)
    }
}

/// Scenario C: 9,950 tracked of 10,000; Task 72 %, WorkOrder 65 %, Comments 81 %.
async fn scenario_c_lineage(failed_at_pii: u32) -> Arc<MemoryLineageStore> {
    let lineage = Arc::new(MemoryLineageStore::new());
    let mut updates = Vec::new();
    for i in 0..9_950u32 {
        let (stage, status) = match i {
            _ if i < failed_at_pii => ("pii_removed", LineageStatus::Failed),
            _ if i < failed_at_pii + 10 => ("extracted", LineageStatus::InProgress),
            _ if i < failed_at_pii + 30 => ("pii_removed", LineageStatus::Failed),
            _ if i < failed_at_pii + 45 => ("embedding_generated", LineageStatus::Failed),
            _ if i < failed_at_pii + 50 => ("embedding_generated", LineageStatus::InProgress),
            _ => ("loaded", LineageStatus::Completed),
        };
        let pct = i % 100;
        let meta = json!({
            "task_count": u32::from(pct < 72) * 2,
            "workorder_count": u32::from(pct < 65),
            "comment_count": u32::from(pct < 81) * 3,
            "fields_populated": if pct < 3 { 21 } else { 38 },
        });
        updates.push(
            LineageUpdate::new(format!("5007T{i:010}"), stage, status, now()).with_metadata(meta),
        );
    }
    for chunk in updates.chunks(1_000) {
        lineage.upsert("cases", chunk).await.unwrap();
    }
    lineage
}

#[tokio::test]
async fn scenario_c_audit_counts_gaps_coverage_and_alerts() {
    let lineage = scenario_c_lineage(0).await;
    let audit = AuditReconciler::new("cases", stages(), lineage, QualityRules::seed_003())
        .unwrap()
        .with_source(Arc::new(Fixed(10_000)));
    let r = audit.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(r.count(counters::SOURCE_COUNT), 10_000);
    assert_eq!(r.count(counters::TRACKED), 9_950);
    assert_eq!(r.count(counters::TOTAL_GAP), 100);
    assert_eq!(r.count(counters::FAILED), 35);
    let s: AuditSummary = serde_json::from_value(r.details()[AUDIT_DETAIL].clone()).unwrap();
    let gaps: Vec<u64> = s.gaps.stages.iter().map(|g| g.gap).collect();
    assert_eq!(gaps, [50, 10, 20, 20]);
    // i % 100 < 72 over 0..9,950: 99 full hundreds × 72 + 50 = 7,178.
    let cov: Vec<(&str, u64, bool)> = s
        .coverage
        .iter()
        .map(|c| (c.table.as_str(), c.present, c.ok))
        .collect();
    assert_eq!(
        cov,
        [
            ("Task", 7_178, true),
            ("WorkOrder", 6_485, false),
            ("Comments", 8_069, true)
        ]
    );
    assert_eq!(s.fields.as_ref().unwrap().below, 99 * 3 + 3);
    // Gap 100 is not above 100; failure rate 35/9,950 is under 10 %: only coverage and fields.
    let codes: Vec<(&str, Severity)> = s
        .alerts
        .iter()
        .map(|a| (a.code.as_str(), a.severity))
        .collect();
    assert_eq!(
        codes,
        [
            ("coverage:WorkOrder", Severity::High),
            ("min_fields", Severity::Medium)
        ]
    );
    assert_eq!(r.count(counters::ALERTS_HIGH), 1);
    assert_eq!(r.count(counters::ALERTS_CRITICAL), 0);
}

#[tokio::test]
async fn failure_rate_and_gap_alerts() {
    // 1,035 of 9,950 tracked failed (10.4 %); source 10,001, 8,900 loaded (gap 1,101).
    let lineage = scenario_c_lineage(1_000).await;
    let audit = AuditReconciler::new("cases", stages(), lineage, QualityRules::new())
        .unwrap()
        .with_source(Arc::new(Fixed(10_001)));
    let r = audit.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(r.count(counters::ALERTS_CRITICAL), 1);
    assert_eq!(r.count(counters::ALERTS_HIGH), 1);
    let s: AuditSummary = serde_json::from_value(r.details()[AUDIT_DETAIL].clone()).unwrap();
    assert_eq!(s.alerts[0].code, "failure_rate", "most severe first");
    assert_eq!(s.alerts[1].code, "gap");
    assert!(r.notes().iter().any(|n| n.starts_with("[CRITICAL]")));
}

#[test]
fn alert_thresholds_are_strict() {
    let rules = QualityRules::new();
    assert!(
        alerts(&rules, None, &[], None, 0.10, 10).is_empty(),
        "10 % is not above 10 %"
    );
    assert_eq!(alerts(&rules, None, &[], None, 0.1001, 10).len(), 1);
}

#[test]
fn rules_are_validated() {
    let lineage: Arc<dyn LineageStore> = Arc::new(MemoryLineageStore::new());
    let bad_share =
        QualityRules::new().coverage(CoverageRule::new("Task", "task_count", 1.5, Severity::High));
    assert!(AuditReconciler::new("cases", stages(), lineage.clone(), bad_share).is_err());
    let bad_key =
        QualityRules::new().coverage(CoverageRule::new("Task", "task count", 0.5, Severity::High));
    assert!(AuditReconciler::new("cases", stages(), lineage.clone(), bad_key).is_err());
    let bad_fields = QualityRules::new().fields(FieldsRule {
        metadata_key: "fields_populated".into(),
        min_fields: 45,
        total_fields: 44,
        severity: Severity::Medium,
    });
    assert!(AuditReconciler::new("cases", stages(), lineage, bad_fields).is_err());
}

#[test]
fn number_formats() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(10_000), "10,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(percent(0.7), "70%");
    assert_eq!(percent(0.9995), "99.95%");
    assert_eq!(percent(0.65), "65%");
    assert_eq!(percent(0.0), "0%");
}

/// Replays: keys starting with `ok` succeed on the primary, `fb` on the fallback, the rest
/// fail permanently.
struct Handler;

#[async_trait]
impl StageHandler for Handler {
    async fn replay(&self, _: &RunContext, r: &Replay) -> std::result::Result<(), ReplayError> {
        if r.key.starts_with("ok") || (r.key.starts_with("fb") && r.provider.is_some()) {
            Ok(())
        } else if r.key.starts_with("fb") {
            Err(ReplayError::transient("EmbeddingAPITimeout", "timeout"))
        } else {
            Err(ReplayError::permanent(
                "MissingRequiredFields",
                "no resolution in SFDC",
            ))
        }
    }
}

#[tokio::test]
async fn the_seed_003_text_report_from_a_run() {
    // A small pipeline so every figure can be checked by hand.
    let lineage = Arc::new(MemoryLineageStore::new());
    let rows = [
        (
            "c1",
            "loaded",
            LineageStatus::Completed,
            json!({"task_count": 1, "workorder_count": 1, "fields_populated": 40}),
        ),
        (
            "c2",
            "loaded",
            LineageStatus::Completed,
            json!({"task_count": 2, "workorder_count": 0, "fields_populated": 38}),
        ),
        (
            "c3",
            "loaded",
            LineageStatus::Completed,
            json!({"task_count": 1, "workorder_count": 1, "fields_populated": 21}),
        ),
        (
            "c4",
            "embedding_generated",
            LineageStatus::Failed,
            json!({"task_count": 0, "fields_populated": 30}),
        ),
        (
            "c5",
            "pii_removed",
            LineageStatus::Failed,
            json!({"task_count": 3, "fields_populated": 35}),
        ),
    ];
    let updates: Vec<LineageUpdate> = rows
        .iter()
        .map(|(k, s, st, m)| {
            LineageUpdate::new(*k, *s, *st, now() - CDuration::hours(1)).with_metadata(m.clone())
        })
        .collect();
    lineage.upsert("cases", &updates).await.unwrap();
    let failures = Arc::new(MemoryFailedRecordStore::new());
    let f = |key: &str, stage: &str, error_type: &str| NewFailure {
        key: key.into(),
        stage: stage.into(),
        error_type: error_type.into(),
        message: "x".into(),
        payload: json!({}),
        at: now() - CDuration::hours(1),
    };
    failures
        .record(
            "cases",
            &[
                f("ok-1", "embedding_generated", "EmbeddingAPITimeout"),
                f("ok-2", "embedding_generated", "EmbeddingAPITimeout"),
                f("fb-1", "embedding_generated", "EmbeddingAPITimeout"),
                f("c4", "loaded", "WeaviateTimeout"),
                f("c5", "embedding_generated", "MissingRequiredFields"),
            ],
        )
        .await
        .unwrap();
    let rules = QualityRules::new()
        .coverage(CoverageRule::new(
            "Task",
            "task_count",
            0.70,
            Severity::High,
        ))
        .coverage(
            CoverageRule::new("WorkOrder", "workorder_count", 0.70, Severity::High)
                .with_action("Check WorkOrder data availability in SFDC"),
        )
        .fields(FieldsRule {
            metadata_key: "fields_populated".into(),
            min_fields: 30,
            total_fields: 44,
            severity: Severity::Medium,
        });
    let handler: Arc<dyn StageHandler> = Arc::new(Handler);
    let recovery = RecoveryReconciler::new("cases", stages(), failures.clone())
        .unwrap()
        .stage(
            "embedding_generated",
            StageRecovery::new(handler.clone(), Arc::new(DelaySchedule::once()))
                .with_fallbacks(["nomic"])
                .unwrap(),
        )
        .unwrap();
    let audit = AuditReconciler::new("cases", stages(), lineage, rules)
        .unwrap()
        .with_source(Arc::new(Fixed(6)))
        .with_failures(failures);
    let runner = Runner::builder("pipeline-reconciliation")
        .time_source(Arc::new(ManualClock::at(now())))
        .step(recovery)
        .step(audit)
        .build()
        .unwrap();
    let run = runner.run().await;
    assert_eq!(
        run.status,
        RunStatus::Partial,
        "a record went to manual review"
    );

    let report = PipelineReport::from_run_report(&run).with_noun("cases");
    let text = report.render_text();
    let expected = "\
=== Reconciliation Run: 2024-11-04 06:00 ===

Records Checked: 6 cases
Discrepancies Found: 3 cases

Stage Counts:
  source                            6
  extracted                         5  (gap 1)
  pii_removed                       5
  embedding_generated               4  (gap 1)
  loaded                            3  (gap 1)

Recovery Results:
 Successfully Recovered: 3 cases
  - 2 cases: retry succeeded
  - 1 case: used nomic fallback

 Still Failed: 2 cases (1 need manual review)
  - 1 case: MissingRequiredFields
  - 1 case: WeaviateTimeout

Multi-Table Coverage:
 Task: 80% (above 70% threshold)
 WorkOrder: 40% (below 70% threshold)
 Under 30 of 44 fields: 1 case

Alerts:
 [CRITICAL] 40% of tracked records are failing (2 records; limit 10%)
 [HIGH] WorkOrder coverage 40% is below the 70% threshold
 [MEDIUM] 1 record has fewer than 30 of 44 fields populated

Actions Required:
1. Stop the pipeline and investigate the root cause (40% of tracked records are failing (2 records; limit 10%))
2. Check WorkOrder data availability in SFDC (WorkOrder coverage 40% is below the 70% threshold)
3. Flag for review, but continue processing (1 record has fewer than 30 of 44 fields populated)
4. Review 1 record failing with MissingRequiredFields (manual review)
";
    assert_eq!(text, expected, "\n--- got ---\n{text}");
    // JSON round trip.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["audit"]["gaps"]["total_gap"], 3);
    assert_eq!(json["recovery"]["recovered_by_method"]["retry"], 2);
    let back: PipelineReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn an_empty_run_renders_without_sections() {
    let r = PipelineReport::new(now(), None, None);
    assert_eq!(
        r.render_text(),
        "=== Reconciliation Run: 2024-11-04 06:00 ===\n\nActions Required: none\n"
    );
}
